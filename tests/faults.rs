//! Redis faults and bad data never break the app: whatever happens to the
//! Redis behind the layer (stopped mid-load, down at start-up, hung, full,
//! holding a huge value), every client gets the origin's answer, and
//! caching comes back by itself once Redis does.
//!
//! Each test starts a `redis-server` of its own (they stop it, stall it or
//! reconfigure it). No test asserts a latency: waits for reconnection or a
//! breaker's cool-down are bounded loops with a count and a deadline.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{Layer, Service};
use tower_cache_aside::{CacheAsideLayer, RedisStore, Route};

use support::{
    assert_hit, bypass, cached_fields, fred_client, free_port, get, head, miss, read_field,
    request, send, send_unread, write_field, CountingStore, Origin, RedisServer, Reply, SlowProxy,
    TestBody, CACHE, MISS, SIGNAL_TIMEOUT, STORED,
};

/// An origin whose body names the request: `fresh <path>` for GET, empty
/// for HEAD, `wrote <path>` for anything else.
fn path_origin() -> Origin {
    Origin::new(|req| {
        let body = match *req.method() {
            Method::GET => format!("fresh {}", req.uri().path()),
            Method::HEAD => String::new(),
            _ => format!("wrote {}", req.uri().path()),
        };
        Response::builder()
            .header("content-type", "text/plain")
            .body(TestBody::full(body))
            .expect("response")
    })
}

/// The `Cache-Status` of a request that skipped the store because the
/// circuit breaker is open.
fn unavailable() -> String {
    bypass("store-unavailable")
}

/// Whether `status` says the store failed or was skipped: what a request
/// may get while Redis is down or hung.
fn degraded(status: &str) -> bool {
    status == unavailable() || is_failed_lookup(status)
}

/// A miss because the store call failed or was late.
fn is_failed_lookup(status: &str) -> bool {
    status.starts_with(&format!("{CACHE}; fwd=miss"))
        && (status.ends_with("detail=store-timeout") || status.ends_with("detail=store-error"))
}

/// Asserts that `reply` is the origin's answer to `GET path`.
fn assert_fresh(reply: &Reply, path: &str, what: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {path}");
    assert_eq!(reply.text(), format!("fresh {path}"), "{what}: {path}");
}

/// Sends `GET path` until it is a hit (bounded in count and time), waiting
/// after each stored miss for its write to finish. Every answer must be
/// the origin's; returns the `Cache-Status` of the misses on the way.
async fn until_hit<S, B>(svc: &S, store: &CountingStore, path: &str) -> Vec<String>
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    let mut statuses = Vec::new();
    for attempt in 0..400 {
        assert!(
            Instant::now() < deadline,
            "no hit for {path} after {attempt} attempts: {statuses:?}"
        );
        let finished = store.stats().puts_finished();
        let reply = send(svc, get(path)).await;
        assert_fresh(&reply, path, &format!("attempt {attempt}"));
        if reply.is_hit() {
            assert_hit(&reply);
            return statuses;
        }
        let status = reply.cache_status();
        if status.contains("; stored") {
            store
                .wait_until("the write of a miss", |s| s.puts_finished() > finished)
                .await;
        }
        statuses.push(status);
        // Pacing while fred reconnects or the breaker cools down.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no hit for {path}: {statuses:?}");
}

/// Runs a blocking [`RedisServer`] call off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking call does not panic")
}

/// `CONFIG SET name value` on a server the test started.
async fn config_set(raw: &fred::clients::Client, name: &str, value: &str) {
    use fred::interfaces::ClientLike;
    use fred::types::{CustomCommand, Value};
    let reply: Value = raw
        .custom(
            CustomCommand::new_static("CONFIG", None, false),
            vec!["SET".to_owned(), name.to_owned(), value.to_owned()],
        )
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
    assert_eq!(reply.as_str().as_deref(), Some("OK"), "CONFIG SET {name}");
}

/// Waits (bounded) until no fill lease under `prefix` is left on the
/// server; `why` says what a lease left at the bound means.
async fn until_no_lease(raw: &fred::clients::Client, prefix: &str, bound: Duration, why: &str) {
    let deadline = Instant::now() + bound;
    let leases_now = || async {
        let fields = cached_fields(raw, &format!("{prefix}*")).await;
        fields
            .into_iter()
            .filter(|f| f.contains("}:l:"))
            .collect::<Vec<_>>()
    };
    for _ in 0..1000 {
        let leases = leases_now().await;
        if leases.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leases still held after {bound:?}: {leases:?}: {why}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("leases still held: {:?}: {why}", leases_now().await);
}

// ---------------------------------------------------------------------------
// 1. Redis stopped and started again under load
// ---------------------------------------------------------------------------

const CLIENTS: usize = 8;
/// Paths the clients read; they also write to all but the last.
const PATHS: [&str; 4] = ["/load/0", "/load/1", "/load/2", "/load/read-only"];
const READ_ONLY: &str = "/load/read-only";
/// Each client stops after this many requests at most.
const MAX_REQUESTS_PER_CLIENT: usize = 5_000;

/// What the clients have seen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    requests: usize,
    /// Answers that were not the origin's, or not 2xx.
    wrong: usize,
    hits: usize,
    /// Hits of requests sent after the restarted server was up.
    hits_after_restart: usize,
    /// Requests that skipped the store (the breaker was open).
    bypassed: usize,
    /// Lookups that failed or were late.
    failed_lookups: usize,
    writes: usize,
}

#[derive(Debug)]
struct Load {
    progress: tokio::sync::watch::Sender<Progress>,
    /// The first few wrong answers, for the failure message.
    wrong: Mutex<Vec<String>>,
    stop: AtomicBool,
    restarted: AtomicBool,
}

impl Load {
    fn new() -> Arc<Load> {
        Arc::new(Load {
            progress: tokio::sync::watch::Sender::new(Progress::default()),
            wrong: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            restarted: AtomicBool::new(false),
        })
    }

    fn now(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until `done` holds; panics after [`SIGNAL_TIMEOUT`].
    async fn wait(&self, what: &str, done: impl FnMut(&Progress) -> bool) {
        let mut rx = self.progress.subscribe();
        if tokio::time::timeout(SIGNAL_TIMEOUT, rx.wait_for(done))
            .await
            .is_err()
        {
            panic!("timed out waiting until {what}: {:?}", self.now());
        }
    }
}

/// One client: GETs over [`PATHS`], every eighth request a PUT, until told
/// to stop. Records what it saw instead of panicking, so that the test
/// reports every wrong answer at the end.
async fn client_loop<S, B>(svc: S, load: Arc<Load>, client: usize)
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        let path = PATHS[(client + i) % PATHS.len()];
        let write = i % 8 == 7 && path != READ_ONLY;
        let after_restart = load.restarted.load(Ordering::SeqCst);
        let (req, expected) = if write {
            (request(Method::PUT, path, &[]), format!("wrote {path}"))
        } else {
            (get(path), format!("fresh {path}"))
        };
        let reply = send(&svc, req).await;
        let status = reply.cache_status();
        let right = reply.status.is_success() && reply.body == expected.as_bytes();
        if !right {
            let mut wrong = load.wrong.lock().unwrap_or_else(|e| e.into_inner());
            if wrong.len() < 10 {
                wrong.push(format!(
                    "client {client} #{i} {path}: {} {:?} ({status})",
                    reply.status, reply.body
                ));
            }
        }
        let hit = reply.is_hit();
        load.progress.send_modify(|p| {
            p.requests += 1;
            p.wrong += usize::from(!right);
            p.hits += usize::from(hit);
            p.hits_after_restart += usize::from(hit && after_restart);
            p.bypassed += usize::from(status == unavailable());
            p.failed_lookups += usize::from(is_failed_lookup(&status));
            p.writes += usize::from(write);
        });
        // Pacing, so that the load spans the breaker's cool-downs instead
        // of spinning on instant bypasses.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Eight clients read and write through the layer while Redis is killed
/// and started again on the same port: not one answer is wrong, the
/// breaker opens, caching resumes by itself, and no fill lease outlives
/// its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_restarted_mid_load_never_fails_a_request() {
    let server = Arc::new(RedisServer::launch());
    let prefix = "t:midload:";
    let lease_ttl = Duration::from_secs(1);
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&server.url())
            .await
            .expect("connect to the test redis-server"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_millis(100))
        .purge_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(300))
        .lease_ttl(lease_ttl)
        .fill_wait(Duration::from_millis(500))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());

    let load = Load::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(client_loop(svc.clone(), load.clone(), client)))
        .collect();

    load.wait("caching works before the outage", |p| {
        p.requests >= 200 && p.hits >= 20
    })
    .await;
    let before = load.now();

    let stopping = server.clone();
    blocking(move || stopping.stop()).await;
    assert!(!server.is_running());
    let at_stop = load.now().requests;
    load.wait("the load has run on through the outage", |p| {
        p.requests >= at_stop + 400 && p.bypassed >= 1
    })
    .await;
    let during = load.now();

    let starting = server.clone();
    blocking(move || starting.start()).await;
    load.restarted.store(true, Ordering::SeqCst);
    let at_start = load.now().requests;
    load.wait("caching resumes under load", |p| {
        p.requests >= at_start + 200 && p.hits_after_restart >= 10
    })
    .await;

    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("a client task panicked");
    }
    let end = load.now();
    let wrong = load.wrong.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(end.wrong, 0, "wrong answers: {wrong:?}; {end:?}");
    assert!(end.writes > 0, "the load wrote too: {end:?}");
    assert!(
        during.failed_lookups > before.failed_lookups,
        "the outage was felt: {before:?} then {during:?}"
    );
    assert!(during.bypassed > 0, "the breaker opened: {during:?}");

    // Once quiet, both a path that was only read and one whose purges
    // failed during the outage (retried in the background) are cached.
    until_hit(&svc, &store, READ_ONLY).await;
    until_hit(&svc, &store, "/load/0").await;

    // No lease is left held: whatever a failed fill or release left behind
    // ends at its TTL.
    let raw = fred_client(&server.url()).await;
    until_no_lease(
        &raw,
        prefix,
        lease_ttl * 5,
        "a lease outlived its TTL (taken without PX?)",
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. The app starts while Redis is down
// ---------------------------------------------------------------------------

/// `connect_lazy` does not wait for Redis: the app serves from the origin
/// while nothing listens, and starts caching by itself once a server comes
/// up on that port.
#[tokio::test]
async fn the_app_starts_with_redis_down_and_caches_once_it_is_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let redis = RedisStore::connect_lazy(&url).expect("connect_lazy does not need a server");
    let store = CountingStore::new(Arc::new(redis));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix("t:lazy:")
        .store_timeout(Duration::from_millis(100))
        .circuit_breaker(3, Duration::from_millis(300))
        .lease_ttl(Duration::from_secs(1))
        .fill_wait(Duration::from_millis(300))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());

    let mut statuses = Vec::new();
    for round in 0..5 {
        for path in ["/lazy/a", "/lazy/b"] {
            let reply = send(&svc, get(path)).await;
            assert_fresh(&reply, path, &format!("round {round}"));
            let status = reply.cache_status();
            assert!(degraded(&status), "round {round} {path}: {status}");
            statuses.push(status);
        }
    }
    assert!(
        is_failed_lookup(&statuses[0]),
        "the store is tried first: {statuses:?}"
    );
    assert!(
        statuses.contains(&unavailable()),
        "the breaker opened: {statuses:?}"
    );
    assert_eq!(origin.calls(), statuses.len(), "the origin answered each");
    assert_eq!(store.stats().puts_started, 0, "nothing could be stored");

    let server = blocking(move || RedisServer::launch_on(port)).await;
    assert_eq!(server.url(), url);
    // The client connects by itself (fred's back-off), the breaker closes
    // on its next probe, and caching starts: for a path asked for while
    // Redis was down, and for a new one.
    until_hit(&svc, &store, "/lazy/a").await;
    until_hit(&svc, &store, "/lazy/new").await;
}

// ---------------------------------------------------------------------------
// 3. A Redis made slow or hung by a proxy
// ---------------------------------------------------------------------------

/// Behind a proxy that holds Redis's replies, lookups miss their deadline,
/// the breaker opens (requests then skip the store), a probe after the
/// cool-down fails and opens it again; once the proxy lets replies
/// through, the breaker closes by itself and hits come back.
#[tokio::test]
async fn a_hung_redis_opens_the_breaker_which_closes_by_itself_once_healed() {
    let server = RedisServer::launch();
    let upstream = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = SlowProxy::start(upstream).await;
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&proxy.url())
            .await
            .expect("connect through the proxy"),
    ));
    let failures = 3;
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix("t:stall:")
        .store_timeout(Duration::from_millis(100))
        .circuit_breaker(failures, Duration::from_millis(500))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());

    // Healthy through the proxy; then slow, but within the deadline: still
    // cached.
    until_hit(&svc, &store, "/warm").await;
    proxy.delay(Duration::from_millis(10));
    until_hit(&svc, &store, "/slow").await;
    proxy.heal();
    let puts = store.stats().puts_started;

    proxy.stall();
    // Sequential requests: the first `failures` lookups are late, then the
    // breaker is open and the store is skipped.
    let paths = ["/warm", "/stalled/1", "/stalled/2"];
    let mut statuses = Vec::new();
    for i in 0..6 {
        let path = paths[i % paths.len()];
        let reply = send(&svc, get(path)).await;
        assert_fresh(&reply, path, &format!("stalled #{i}"));
        statuses.push(reply.cache_status());
    }
    let late = miss("store-timeout");
    assert!(
        statuses[..failures as usize].iter().all(|s| *s == late),
        "late lookups first: {statuses:?}"
    );
    assert_eq!(
        statuses[failures as usize],
        unavailable(),
        "then the breaker is open: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| degraded(s)), "{statuses:?}");

    // Still hung after the cool-down: the probe is late too, and the
    // breaker opens again.
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    let mut after_open = Vec::new();
    let mut reopened = false;
    for attempt in 0..400 {
        assert!(Instant::now() < deadline, "no probe: {after_open:?}");
        let reply = send(&svc, get("/warm")).await;
        assert_fresh(&reply, "/warm", &format!("probe attempt {attempt}"));
        let status = reply.cache_status();
        assert!(degraded(&status), "{status}");
        let probed = after_open.contains(&late);
        after_open.push(status.clone());
        if probed && status == unavailable() {
            reopened = true;
            break;
        }
        // Pacing while the breaker cools down.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        reopened,
        "a late probe opens the breaker again: {after_open:?}"
    );
    assert_eq!(
        store.stats().puts_started,
        puts,
        "nothing is written while hung"
    );

    // Healed: the breaker closes by itself on its next probe.
    proxy.heal();
    let misses = until_hit(&svc, &store, "/warm").await;
    assert!(
        misses.iter().all(|s| degraded(s)),
        "only degraded answers until the hit: {misses:?}"
    );
    // Closed: a new path is looked up and stored again.
    let reply = send(&svc, get("/after")).await;
    assert_fresh(&reply, "/after", "healed");
    assert_eq!(reply.cache_status(), STORED);
    until_hit(&svc, &store, "/after").await;
}

// ---------------------------------------------------------------------------
// 4. A Redis that answers writes with errors (full maxmemory)
// ---------------------------------------------------------------------------

/// With `maxmemory` reached under `noeviction`, Redis refuses writes but
/// still answers reads: cached entries are still served, new paths are
/// answered by the origin and not stored, and writes that fail with OOM
/// (the refresh lease of a stale entry) do not open the breaker: a full
/// Redis is up. Once memory is raised, caching resumes.
#[tokio::test]
async fn a_redis_that_refuses_writes_still_serves_hits_and_the_breaker_stays_closed() {
    let server = RedisServer::launch();
    let prefix = "t:oom:";
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&server.url())
            .await
            .expect("connect to the test redis-server"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_secs(5))
        // A long cool-down: were the breaker to open, every later request
        // would say so.
        .circuit_breaker(3, Duration::from_secs(60))
        // /stale goes stale quickly; a stale hit takes the refresh lease,
        // which is a write.
        .route("/stale", Route::new().ttl(Duration::from_secs(1)))
        .stale_while_revalidate(Duration::from_secs(60))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    for (i, path) in ["/kept", "/stale"].into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
        store.wait_puts(i + 1).await;
    }
    assert_hit(&send(&svc, get("/kept")).await);

    // Twenty misses hold their fill leases; their bodies are read (and the
    // fills written) only once Redis is full. Redis lets a script that has
    // already written go on writing, so whether such a fill is stored
    // depends on the script's order: either way the client gets the whole
    // answer and no lease lingers.
    let mut held = Vec::new();
    for i in 0..20 {
        let response = send_unread(&svc, get(&format!("/held/{i}"))).await;
        assert_eq!(
            support::cache_status_of(response.headers()),
            STORED,
            "/held/{i}"
        );
        held.push((i, response));
    }

    config_set(&raw, "maxmemory-policy", "noeviction").await;
    config_set(&raw, "maxmemory", "1").await;

    for (i, response) in held {
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("the body is read whole")
            .to_bytes();
        assert_eq!(body, format!("fresh /held/{i}"));
    }
    let stats = store
        .wait_until("the twenty fills", |s| s.puts_finished() >= 22)
        .await;
    assert_eq!(
        stats.puts_abandoned, 0,
        "Redis answered each fill: {stats:?}"
    );

    // Hits until /stale's freshness (1 s) is over.
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    let mut became_stale = false;
    for attempt in 0..400 {
        assert!(Instant::now() < deadline, "/stale never went stale");
        let reply = send(&svc, get("/stale")).await;
        assert_fresh(&reply, "/stale", &format!("attempt {attempt}"));
        let status = reply.cache_status();
        assert!(status.starts_with(&format!("{CACHE}; hit")), "{status}");
        if status.contains("fwd=stale") {
            became_stale = true;
            break;
        }
        // Pacing until the entry's TTL ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(became_stale);

    // Between misses whose writes are refused and stale hits whose refresh
    // lease fails with OOM, hits are still served: the breaker never opens.
    for i in 0..20 {
        let path = format!("/new/{i}");
        let reply = send(&svc, get(&path)).await;
        assert_fresh(&reply, &path, "full");
        assert_eq!(reply.cache_status(), miss("store-refuses-writes"), "{path}");
        let stale = send(&svc, get("/stale")).await;
        assert_fresh(&stale, "/stale", &format!("after {path}"));
        assert!(
            stale
                .cache_status()
                .starts_with(&format!("{CACHE}; hit; fwd=stale")),
            "after {path}: {}",
            stale.cache_status()
        );
        let hit = send(&svc, get("/kept")).await;
        assert_hit(&hit);
        assert_fresh(&hit, "/kept", &format!("after {path}"));
    }
    // Twenty stale hits at once: their refresh leases all fail with OOM,
    // one after the other, and still the breaker stays closed.
    let burst = futures_util::future::join_all((0..20).map(|_| send(&svc, get("/stale")))).await;
    for (i, stale) in burst.iter().enumerate() {
        assert_fresh(stale, "/stale", &format!("burst #{i}"));
        assert!(
            stale
                .cache_status()
                .starts_with(&format!("{CACHE}; hit; fwd=stale")),
            "burst #{i}: {}",
            stale.cache_status()
        );
    }
    assert_hit(&send(&svc, get("/kept")).await);
    let head_hit = send(&svc, head("/kept")).await;
    assert_eq!(head_hit.status, StatusCode::OK);
    assert_hit(&head_hit);

    assert_eq!(store.stats().puts_started, 22, "no write was attempted");
    assert_eq!(
        origin.calls_for("/stale"),
        1,
        "no refresh of /stale could take its lease"
    );
    let fields = cached_fields(&raw, &format!("{prefix}*")).await;
    let entries: Vec<_> = fields.iter().filter(|f| f.contains("}:v:")).collect();
    assert!(
        entries.iter().any(|k| k.contains("{/kept}")),
        "/kept is stored: {entries:?}"
    );
    assert!(
        !entries.iter().any(|k| k.contains("{/new")),
        "no path first asked for while Redis was full is stored: {entries:?}"
    );
    let leases: Vec<_> = fields.iter().filter(|f| f.contains("}:l:")).collect();
    assert!(
        leases.is_empty(),
        "the fills stored or released their leases, and no refused write took one: {leases:?}"
    );
    assert_eq!(origin.calls_for("/kept"), 1, "/kept was served from Redis");

    // Room again: new paths and refused ones are stored.
    config_set(&raw, "maxmemory", "0").await;
    for path in ["/new/0", "/later"] {
        let reply = send(&svc, get(path)).await;
        assert_fresh(&reply, path, "room again");
        assert_eq!(reply.cache_status(), STORED, "{path}");
        until_hit(&svc, &store, path).await;
    }
}

// ---------------------------------------------------------------------------
// 5. A huge value planted under an entry's key
// ---------------------------------------------------------------------------

/// A value over `with_max_value_bytes` at an entry's key is never served
/// nor kept: a GET is a miss answered by the origin whose fresh answer
/// replaces it; a HEAD is a miss and the value is deleted.
#[tokio::test]
async fn a_huge_value_at_an_entry_key_is_dropped_and_replaced() {
    let server = RedisServer::launch();
    let prefix = "t:huge:";
    let max = 1024;
    let redis = RedisStore::connect(&server.url())
        .await
        .expect("connect to the test redis-server")
        .with_max_value_bytes(max);
    let store = CountingStore::new(Arc::new(redis));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_secs(5))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    store.wait_puts(1).await;
    let keys = cached_fields(&raw, &format!("{prefix}*")).await;
    assert_eq!(keys.len(), 1, "one entry: {keys:?}");
    let key = keys[0].clone();
    let small = read_field(&raw, &key).await.expect("the entry");
    assert!(small.starts_with(b"TCA") && small.len() < max as usize);

    let huge = Bytes::from(vec![b'x'; 4096]);
    let plant = |value: Bytes| {
        let raw = raw.clone();
        let key = key.clone();
        async move { write_field(&raw, &key, value).await }
    };

    // GET: a miss answered by the origin, which takes the lease and whose
    // answer replaces the huge value.
    plant(huge.clone()).await;
    let reply = send(&svc, get("/doc")).await;
    assert_fresh(&reply, "/doc", "huge value");
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(origin.calls_for("/doc"), 2);
    store.wait_puts(2).await;
    let now = read_field(&raw, &key)
        .await
        .expect("a fresh entry at the key");
    assert!(
        now.starts_with(b"TCA") && now.len() < max as usize,
        "a fresh small entry, not the huge value ({} bytes)",
        now.len()
    );
    let hit = send(&svc, get("/doc")).await;
    assert_hit(&hit);
    assert_fresh(&hit, "/doc", "replaced");

    // HEAD: a miss, and the huge value is deleted.
    plant(huge).await;
    let reply = send(&svc, head("/doc")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.cache_status(), MISS);
    assert_eq!(
        read_field(&raw, &key).await,
        None,
        "the huge value was deleted"
    );
    assert_eq!(origin.calls(), 3);
}

// ---------------------------------------------------------------------------
// 6. A lookup that misses its deadline
// ---------------------------------------------------------------------------

/// A lookup that misses `store_timeout` still runs on Redis, and on a miss
/// it takes the fill lease with a token only the timed-out request knew.
/// Nobody will fill or release that lease: it must not make the next
/// requests for the path wait on it until `lease_ttl`.
#[tokio::test]
async fn a_lookup_that_misses_its_deadline_leaves_no_lease_behind() {
    let server = RedisServer::launch();
    let upstream = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = SlowProxy::start(upstream).await;
    let prefix = "t:orphan:";
    let lease_ttl = Duration::from_secs(10);
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&proxy.url())
            .await
            .expect("connect through the proxy"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_millis(100))
        // The breaker off: only the lease is under test.
        .circuit_breaker(0, Duration::from_secs(1))
        .lease_ttl(lease_ttl)
        .fill_wait(Duration::from_millis(500))
        .build()
        .expect("valid layer");
    let origin = path_origin();
    let svc = layer.layer(origin.service());
    let raw = fred_client(&server.url()).await;

    until_hit(&svc, &store, "/warm").await;

    proxy.stall();
    let reply = send(&svc, get("/orphan")).await;
    assert_fresh(&reply, "/orphan", "stalled");
    assert_eq!(reply.cache_status(), miss("store-timeout"));
    proxy.heal();

    // Released well before the lease's TTL would end it.
    until_no_lease(
        &raw,
        prefix,
        lease_ttl / 4,
        "the timed-out lookup took the lease on Redis and nobody released it; \
         until lease_ttl every GET of the path waits fill_wait for a fill that \
         never comes (detail=fill-wait) and nothing is stored",
    )
    .await;
    let reply = send(&svc, get("/orphan")).await;
    assert_fresh(&reply, "/orphan", "healed");
    assert_eq!(
        reply.cache_status(),
        STORED,
        "the next request takes the lease and stores"
    );
    until_hit(&svc, &store, "/orphan").await;
}

// ---------------------------------------------------------------------------
// 7. A vary record that is not the layer's
// ---------------------------------------------------------------------------

/// A resource whose responses vary keeps its vary record beside its
/// entries. A record that does not decode (planted, truncated, another
/// version's) is never followed: a layer that has not seen the resource
/// removes it, answers from the origin, and stores the answer with a good
/// record again; one that names a field the origin does not vary on
/// leads only to a miss of a variant that is then stored where the
/// origin's `Vary` says.
#[tokio::test]
async fn a_broken_vary_record_is_removed_and_written_again() {
    let server = RedisServer::launch();
    let prefix = "t:vary-record:";
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&server.url())
            .await
            .expect("connect to the test redis-server"),
    ));
    let layer = || {
        CacheAsideLayer::builder(store.as_dyn())
            .prefix(prefix)
            .store_timeout(Duration::from_secs(5))
            .build()
            .expect("valid layer")
    };
    let origin = Origin::new(|req| {
        let language = req
            .headers()
            .get("accept-language")
            .map_or("-", |v| v.to_str().expect("ASCII"));
        Response::builder()
            .header("vary", "accept-language")
            .body(TestBody::full(format!("in {language}")))
            .expect("response")
    });
    let in_fr = || request(Method::GET, "/doc", &[("accept-language", "fr")]);
    let raw = fred_client(&server.url()).await;

    let first = layer().layer(origin.service());
    assert_eq!(send(&first, in_fr()).await.cache_status(), STORED);
    store.wait_puts(1).await;
    let fields = cached_fields(&raw, &format!("{prefix}*")).await;
    let records: Vec<_> = fields.iter().filter(|f| f.contains("}:m:")).collect();
    let entries: Vec<_> = fields.iter().filter(|f| f.contains("}:v:")).collect();
    assert_eq!((records.len(), entries.len()), (1, 1), "{fields:?}");
    let record = records[0].clone();
    let good = read_field(&raw, &record).await.expect("the record");
    assert_eq!(&good[..], b"TCV\x01\x01\x0faccept-language");

    let mut puts = 1;
    for (bad, what) in [
        (&b"TCV\x01\x01\x0fAccept-Language"[..], "upper case"),
        (&b"TCV\x01\x02\x0faccept-language"[..], "cut short"),
        (&b"TCV\x09"[..], "another version"),
    ] {
        write_field(&raw, &record, Bytes::from_static(bad)).await;
        // A layer that has not seen the resource reads the record.
        let fresh = layer().layer(origin.service());
        let reply = send(&fresh, in_fr()).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert_eq!(reply.text(), "in fr", "{what}");
        assert_eq!(
            reply.cache_status(),
            format!("{STORED}; detail=bad-entry"),
            "{what}"
        );
        puts += 1;
        store.wait_until(what, |s| s.puts_ok >= puts).await;
        assert_eq!(
            read_field(&raw, &record).await.as_deref(),
            Some(&good[..]),
            "{what}: the record is written again"
        );
        let hit = send(&layer().layer(origin.service()), in_fr()).await;
        assert_hit(&hit);
        assert_eq!(hit.text(), "in fr");
    }

    // A well-formed record that names another field: the lookup goes to
    // that variant, misses, and the origin's answer is stored under the
    // variant its own `Vary` gives, with the record put right.
    write_field(&raw, &record, Bytes::from_static(b"TCV\x01\x01\x06origin")).await;
    let fresh = layer().layer(origin.service());
    let reply = send(&fresh, in_fr()).await;
    assert_eq!(reply.text(), "in fr");
    assert_eq!(reply.cache_status(), STORED);
    store
        .wait_until("origin record", |s| s.puts_ok > puts)
        .await;
    assert_eq!(read_field(&raw, &record).await.as_deref(), Some(&good[..]));
    let hit = send(&layer().layer(origin.service()), in_fr()).await;
    assert_hit(&hit);
    puts += 1;

    // A record where only an entry belongs (under the variant itself): a
    // layer that knows the variant removes it and stores the answer.
    let entry = cached_fields(&raw, &format!("{prefix}*"))
        .await
        .into_iter()
        .find(|f| f.contains("}:v:"))
        .expect("the variant's entry");
    let (hash, field) = support::split_field(&entry);
    let planted = format!("{hash}:m:{}", &field[2..]);
    write_field(&raw, &planted, good.clone()).await;
    let times = format!("{hash}:t");
    let planted_field = format!("m:{}", &field[2..]);
    let _: i64 = support::admin(&raw, &["ZADD", &times, "99999999999999", &planted_field])
        .await
        .expect("ZADD");
    let _: i64 = support::admin(&raw, &["HDEL", hash, field])
        .await
        .expect("HDEL");
    let reply = send(&first, in_fr()).await;
    assert_eq!(reply.cache_status(), format!("{STORED}; detail=bad-entry"));
    store
        .wait_until("variant refill", |s| s.puts_ok > puts)
        .await;
    assert_eq!(
        read_field(&raw, &planted).await,
        None,
        "the planted record went"
    );
    assert_hit(&send(&first, in_fr()).await);
}
