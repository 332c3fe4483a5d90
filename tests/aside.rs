//! The typed cache-aside API (`Cache`) on a real `redis-server` started by
//! the test binary (`redis::*`) and, for what does not depend on the store,
//! on `MemoryStore` too (`memory::*`): hits and misses, errors and negative
//! caching, one fetch per cold key, batch reads, invalidation (by key, by
//! keys, by pattern), fail-open while Redis is down, codecs, stale-while-
//! revalidate and long keys.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tower_cache_aside::codec::Json;
use tower_cache_aside::{Cache, CacheBuilder, MemoryStore, RedisStore};

use support::{cached_fields, fred_client, Backend, Harness, RedisServer, SIGNAL_TIMEOUT};

suite!(
    hit_returns_the_cached_value_without_calling_fetch,
    miss_calls_fetch_once_stores_and_returns,
    fetch_error_is_returned_as_is_and_nothing_is_cached,
    none_is_cached_for_the_negative_ttl,
    cached_none_is_not_a_cached_null,
    get_many_fetches_only_the_missing_keys_once_each_in_order,
    get_many_error_is_returned_and_nothing_is_cached,
    invalidate_removes_one_key_and_the_next_read_fetches,
    invalidate_many_removes_every_key_given,
    invalidated_none_is_fetched_again,
    invalidate_pattern_treats_user_text_and_redis_glob_characters_as_literal,
    invalidation_during_a_fetch_keeps_its_value_out_of_the_cache,
    caller_that_goes_away_mid_fetch_releases_the_lease,
    value_of_another_type_is_a_miss_not_an_error,
    stale_value_is_served_at_once_while_one_background_fetch_refreshes_it,
    long_key_is_stored_hit_and_invalidated,
);

#[cfg(feature = "postcard")]
mod with_postcard {
    use super::Backend;

    #[tokio::test]
    async fn redis_value_of_another_codec_is_a_miss() {
        super::value_of_another_codec_is_a_miss(Backend::Redis, "codec_redis").await;
    }

    #[tokio::test]
    async fn memory_value_of_another_codec_is_a_miss() {
        super::value_of_another_codec_is_a_miss(Backend::Memory, "codec_memory").await;
    }

    #[tokio::test]
    async fn redis_postcard_value_of_another_type_is_a_miss() {
        super::postcard_value_of_another_type_is_a_miss(Backend::Redis, "postcard_type_redis")
            .await;
    }

    #[tokio::test]
    async fn redis_postcard_value_with_bytes_left_over_is_a_miss() {
        super::postcard_value_with_bytes_left_over_is_a_miss(Backend::Redis, "postcard_rest_redis")
            .await;
    }

    #[tokio::test]
    async fn memory_postcard_value_with_bytes_left_over_is_a_miss() {
        super::postcard_value_with_bytes_left_over_is_a_miss(
            Backend::Memory,
            "postcard_rest_memory",
        )
        .await;
    }

    #[tokio::test]
    async fn memory_postcard_value_of_another_type_is_a_miss() {
        super::postcard_value_of_another_type_is_a_miss(Backend::Memory, "postcard_type_memory")
            .await;
    }
}

/// A TTL no test outlives.
const LONG: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
    }
}

/// Counts the fetches it hands out.
#[derive(Debug, Clone, Default)]
struct Fetches(Arc<AtomicUsize>);

impl Fetches {
    fn new() -> Fetches {
        Fetches::default()
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// `cache.get_or_fetch(key, LONG, self.of(value))`, which cannot fail.
    async fn get<T, C>(&self, cache: &Cache<C>, key: &str, value: Option<T>) -> Option<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        C: tower_cache_aside::codec::Codec,
    {
        match cache.get_or_fetch(key, LONG, self.of(value)).await {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// A fetch that counts its call and returns `value`.
    fn of<T: Send + 'static>(
        &self,
        value: Option<T>,
    ) -> impl FnOnce() -> Ready<Result<Option<T>, Infallible>> + Send + 'static {
        let calls = self.0.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            ready(Ok(value))
        }
    }
}

/// The cache of a test: its store and prefix, store calls that a loaded
/// machine does not time out, and waits for another caller's fetch that
/// do not give up early.
fn builder(h: &Harness) -> CacheBuilder<Json> {
    Cache::builder(h.store.as_dyn())
        .prefix(h.prefix.clone())
        .store_timeout(Duration::from_secs(5))
        .fill_wait(Duration::from_secs(10))
}

fn cache_of(h: &Harness) -> Cache {
    builder(h).build().expect("valid cache configuration")
}

/// Reads `key` as a `String`; whether it was a hit (fetch not called). On
/// a miss the key is cached again (with `refetched <key>`).
async fn is_hit(cache: &Cache, key: &str) -> bool {
    let fetches = Fetches::new();
    let _: Option<String> = fetches
        .get(cache, key, Some(format!("refetched {key}")))
        .await;
    fetches.count() == 0
}

/// Caches `value` under `key` through a miss.
async fn put(cache: &Cache, key: &str, value: &str) {
    let fetches = Fetches::new();
    let got = fetches.get(cache, key, Some(value.to_owned())).await;
    assert_eq!(got.as_deref(), Some(value), "{key}");
    assert_eq!(fetches.count(), 1, "{key} was a miss");
}

/// Sleeps a little past `ttl` (waiting for a TTL to pass, not for a signal).
async fn outlive(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
}

/// Awaits a signal, failing the test after [`SIGNAL_TIMEOUT`].
async fn signalled<T>(what: &str, rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(SIGNAL_TIMEOUT, rx)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|_| panic!("{what}: sender dropped"))
}

/// Every key of the test's prefix in Redis (empty on MemoryStore).
async fn redis_keys(h: &Harness) -> Option<Vec<String>> {
    let server = h.redis.as_ref()?;
    let client = fred_client(&server.url()).await;
    Some(cached_fields(&client, &format!("{}*", h.prefix)).await)
}

// ---------------------------------------------------------------------------
// get_or_fetch
// ---------------------------------------------------------------------------

async fn hit_returns_the_cached_value_without_calling_fetch(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let fetches = Fetches::new();
    let first = fetches.get(&cache, "user:1", Some(user(1, "Alice"))).await;
    assert_eq!(first, Some(user(1, "Alice")));
    assert_eq!(fetches.count(), 1);

    // A hit: decoded from the store, fetch not called (its value differs).
    let again = fetches
        .get(&cache, "user:1", Some(user(1, "Mallory")))
        .await;
    assert_eq!(again, Some(user(1, "Alice")));
    assert_eq!(fetches.count(), 1, "a hit does not call fetch");

    // Another cache over the same store and prefix reads it too: it lives
    // in the store, not in the `Cache`.
    let other = cache_of(&h);
    let shared = fetches
        .get(&other, "user:1", Some(user(1, "Mallory")))
        .await;
    assert_eq!(shared, Some(user(1, "Alice")));
    assert_eq!(fetches.count(), 1);

    // A cache with another prefix does not.
    let elsewhere = builder(&h)
        .prefix(format!("{}other:", h.prefix))
        .build()
        .unwrap();
    let fresh = fetches
        .get(&elsewhere, "user:1", Some(user(1, "Bob")))
        .await;
    assert_eq!(fresh, Some(user(1, "Bob")));
    assert_eq!(fetches.count(), 2, "another prefix is another key space");
}

async fn miss_calls_fetch_once_stores_and_returns(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let fetches = Fetches::new();
    let got = fetches.get(&cache, "user:2", Some(user(2, "Bob"))).await;
    assert_eq!(got, Some(user(2, "Bob")));
    assert_eq!(fetches.count(), 1, "a miss calls fetch once");
    let stats = h.store.stats();
    assert_eq!(
        (stats.puts_started, stats.puts_ok),
        (1, 1),
        "one write: {stats:?}"
    );

    if let Some(keys) = redis_keys(&h).await {
        let entries: Vec<_> = keys.iter().filter(|k| k.contains("}:v:")).collect();
        assert_eq!(entries.len(), 1, "one entry in Redis: {keys:?}");
        assert!(
            entries[0].starts_with(&format!("{}{{user:2}}", h.prefix)),
            "{keys:?}"
        );
        assert!(
            !keys.iter().any(|k| k.contains("}:l:")),
            "the lease went with the fill: {keys:?}"
        );
    }

    let hit = fetches.get(&cache, "user:2", Some(user(2, "Other"))).await;
    assert_eq!(hit, Some(user(2, "Bob")));
    assert_eq!(fetches.count(), 1);
}

#[derive(Debug, PartialEq)]
struct DbDown(u32);

async fn fetch_error_is_returned_as_is_and_nothing_is_cached(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    // A lease left behind by the failed fetch would make the next caller
    // wait for a minute: past the test's safety net.
    let cache = builder(&h)
        .lease_ttl(Duration::from_secs(60))
        .fill_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            ready(Err::<Option<User>, _>(DbDown(7)))
        }
    };
    let result = cache.get_or_fetch("user:3", LONG, failing).await;
    assert_eq!(result, Err(DbDown(7)), "the fetch's own error");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = h.store.stats();
    assert_eq!(stats.puts_started, 0, "nothing written: {stats:?}");
    assert_eq!(stats.releases, 1, "the lease was released: {stats:?}");
    if let Some(keys) = redis_keys(&h).await {
        assert!(keys.is_empty(), "no entry nor lease left: {keys:?}");
    }

    // The next call fetches again, at once, and caches what it gets.
    let fetches = Fetches::new();
    let next = tokio::time::timeout(
        SIGNAL_TIMEOUT,
        cache.get_or_fetch("user:3", LONG, fetches.of(Some(user(3, "Carol")))),
    )
    .await
    .expect("no lease was left behind")
    .unwrap();
    assert_eq!(next, Some(user(3, "Carol")));
    assert_eq!(fetches.count(), 1, "fetched again after an error");
    let hit = fetches.get(&cache, "user:3", Some(user(3, "Other"))).await;
    assert_eq!(hit, Some(user(3, "Carol")));
    assert_eq!(fetches.count(), 1);
}

async fn none_is_cached_for_the_negative_ttl(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let negative_ttl = Duration::from_secs(1);
    let cache = builder(&h).negative_ttl(negative_ttl).build().unwrap();
    let fetches = Fetches::new();
    let missing = fetches.get(&cache, "user:404", None::<User>).await;
    assert_eq!(missing, None);
    assert_eq!(fetches.count(), 1);
    assert_eq!(h.store.stats().puts_ok, 1, "the absence is cached");

    // Within the negative TTL: still absent, fetch not called (even though
    // it would now find the user).
    let within = fetches
        .get(&cache, "user:404", Some(user(404, "Late")))
        .await;
    assert_eq!(within, None);
    assert_eq!(fetches.count(), 1, "the cached None is a hit");

    // Past the negative TTL (not the value TTL, which is long): fetched.
    outlive(negative_ttl).await;
    let after = fetches
        .get(&cache, "user:404", Some(user(404, "Late")))
        .await;
    assert_eq!(after, Some(user(404, "Late")));
    assert_eq!(fetches.count(), 2, "fetched again after the negative TTL");
    // And the value is kept for its own TTL, not the negative one.
    outlive(negative_ttl).await;
    let kept = fetches
        .get(&cache, "user:404", Some(user(404, "Other")))
        .await;
    assert_eq!(kept, Some(user(404, "Late")));
    assert_eq!(fetches.count(), 2);
}

async fn cached_none_is_not_a_cached_null(backend: Backend, name: &str) {
    use serde_json::Value;

    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let fetches = Fetches::new();
    // A JSON `null` that exists, and an absence.
    let null = fetches.get(&cache, "doc:null", Some(Value::Null)).await;
    assert_eq!(null, Some(Value::Null));
    let none = fetches.get(&cache, "doc:none", None::<Value>).await;
    assert_eq!(none, None);
    // `Some(None)` of an `Option<T>` value serializes as `null` too.
    let inner_none = fetches
        .get(&cache, "opt:some-none", Some(None::<u32>))
        .await;
    assert_eq!(inner_none, Some(None));
    assert_eq!(fetches.count(), 3);

    // Read back from the store: each is what was cached.
    let null = fetches
        .get(&cache, "doc:null", Some(Value::from("x")))
        .await;
    assert_eq!(null, Some(Value::Null), "a cached null is a value");
    let none = fetches
        .get(&cache, "doc:none", Some(Value::from("x")))
        .await;
    assert_eq!(none, None, "a cached None is an absence");
    let inner_none = fetches.get(&cache, "opt:some-none", Some(Some(5u32))).await;
    assert_eq!(inner_none, Some(None));
    assert_eq!(fetches.count(), 3, "all three were hits");
}

// ---------------------------------------------------------------------------
// one fetch per cold key across instances
// ---------------------------------------------------------------------------

/// 200 concurrent callers of one cold key, spread over two caches, get one
/// value from one fetch.
async fn one_fetch_for_200_callers(caches: [Cache; 2]) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let cache = caches[i % 2].clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_fetch("report:cold", LONG, move || async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    // The database read the cache exists to spare.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, Infallible>(Some(format!("value from fetch {n}")))
                })
                .await
                .unwrap()
        }));
    }
    let mut values = HashMap::<Option<String>, usize>::new();
    for task in tasks {
        *values.entry(task.await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "fetches; values: {values:?}"
    );
    assert_eq!(
        values,
        HashMap::from([(Some("value from fetch 1".to_owned()), 200)]),
        "every caller got the one fetched value"
    );
}

fn stampede_cache(store: impl tower_cache_aside::IntoStore, prefix: &str) -> Cache {
    Cache::builder(store)
        .prefix(prefix)
        .store_timeout(Duration::from_secs(5))
        .fill_wait(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_one_fetch_for_200_concurrent_callers_over_two_instances() {
    let server = support::shared_redis();
    let prefix = "t:aside-stampede:";
    // Two instances: two clients, two subscriptions to fill announcements.
    let a = RedisStore::connect(&server.url()).await.unwrap();
    let b = RedisStore::connect(&server.url()).await.unwrap();
    one_fetch_for_200_callers([stampede_cache(a, prefix), stampede_cache(b, prefix)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_one_fetch_for_200_concurrent_callers_over_two_caches() {
    let store = MemoryStore::new();
    let prefix = "t:aside-stampede:";
    one_fetch_for_200_callers([
        stampede_cache(store.clone(), prefix),
        stampede_cache(store, prefix),
    ])
    .await;
}

// ---------------------------------------------------------------------------
// get_many_or_fetch
// ---------------------------------------------------------------------------

/// A `fetch_many` that records what it was asked for and returns the rows
/// of `table` it has.
fn fetch_many_from(
    asked: &Arc<Mutex<Vec<Vec<String>>>>,
    table: &[(&str, &str)],
) -> impl FnOnce(Vec<String>) -> Ready<Result<HashMap<String, String>, Infallible>> {
    let asked = asked.clone();
    let table: HashMap<String, String> = table
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |keys: Vec<String>| {
        let rows = keys
            .iter()
            .filter_map(|k| table.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        asked.lock().unwrap().push(keys);
        ready(Ok(rows))
    }
}

async fn get_many_fetches_only_the_missing_keys_once_each_in_order(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    put(&cache, "u:1", "one").await;
    put(&cache, "u:2", "two").await;

    // Hits (u:1, u:2), misses (u:3, u:4, u:5), duplicates of both; the
    // source has no u:4.
    let keys = ["u:3", "u:1", "u:4", "u:3", "u:5", "u:2", "u:4", "u:1"];
    let table = [("u:3", "three"), ("u:5", "five"), ("u:4-not", "x")];
    let asked = Arc::new(Mutex::new(Vec::new()));
    let values = cache
        .get_many_or_fetch(&keys, LONG, fetch_many_from(&asked, &table))
        .await
        .unwrap();
    let expected: Vec<Option<String>> = [
        Some("three"),
        Some("one"),
        None,
        Some("three"),
        Some("five"),
        Some("two"),
        None,
        Some("one"),
    ]
    .iter()
    .map(|v| v.map(str::to_owned))
    .collect();
    assert_eq!(values, expected, "in the caller's order");
    assert_eq!(
        *asked.lock().unwrap(),
        [["u:3", "u:4", "u:5"]],
        "one fetch_many, with each missing key once, in first-seen order"
    );

    // Everything, the absent u:4 included, now comes from the cache:
    // fetch_many is not called at all.
    let again = Arc::new(Mutex::new(Vec::new()));
    let cached = cache
        .get_many_or_fetch(
            &keys,
            LONG,
            fetch_many_from(&again, &[("u:4", "four"), ("u:3", "other")]),
        )
        .await
        .unwrap();
    assert_eq!(cached, expected);
    assert!(
        again.lock().unwrap().is_empty(),
        "fetch_many called: {:?}",
        again.lock().unwrap()
    );

    // The single-key API reads what the batch cached, the None included.
    let fetches = Fetches::new();
    let four = fetches.get(&cache, "u:4", Some("four".to_owned())).await;
    assert_eq!(four, None, "the absence was cached");
    let five = fetches.get(&cache, "u:5", Some("other".to_owned())).await;
    assert_eq!(five.as_deref(), Some("five"));
    assert_eq!(fetches.count(), 0);

    // An empty batch asks nothing.
    let empty = Arc::new(Mutex::new(Vec::new()));
    let none: Vec<Option<String>> = cache
        .get_many_or_fetch(&[] as &[&str], LONG, fetch_many_from(&empty, &[]))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(empty.lock().unwrap().is_empty());
}

async fn get_many_error_is_returned_and_nothing_is_cached(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = builder(&h)
        .lease_ttl(Duration::from_secs(60))
        .fill_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    put(&cache, "m:1", "one").await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let failing = {
        let asked = asked.clone();
        move |keys: Vec<String>| {
            asked.lock().unwrap().push(keys);
            ready(Err::<HashMap<String, String>, _>(DbDown(9)))
        }
    };
    let result = cache
        .get_many_or_fetch(&["m:1", "m:2", "m:3"], LONG, failing)
        .await;
    assert_eq!(result, Err(DbDown(9)));
    assert_eq!(*asked.lock().unwrap(), [["m:2", "m:3"]]);
    let stats = h.store.stats();
    assert_eq!(stats.puts_started, 1, "only the put of m:1: {stats:?}");
    if let Some(keys) = redis_keys(&h).await {
        assert!(
            !keys.iter().any(|k| k.contains("}:l:")),
            "the leases were released: {keys:?}"
        );
    }
    // The next reads fetch the missing keys again, at once.
    let fetches = Fetches::new();
    let two = tokio::time::timeout(
        SIGNAL_TIMEOUT,
        cache.get_or_fetch("m:2", LONG, fetches.of(Some("two".to_owned()))),
    )
    .await
    .expect("no lease was left behind")
    .unwrap();
    assert_eq!(two.as_deref(), Some("two"));
    assert_eq!(fetches.count(), 1);
    let again = Arc::new(Mutex::new(Vec::new()));
    let values = cache
        .get_many_or_fetch(
            &["m:1", "m:2", "m:3"],
            LONG,
            fetch_many_from(&again, &[("m:3", "three")]),
        )
        .await
        .unwrap();
    assert_eq!(
        values,
        [
            Some("one".to_owned()),
            Some("two".to_owned()),
            Some("three".to_owned())
        ]
    );
    assert_eq!(*again.lock().unwrap(), [["m:3"]]);
}

// ---------------------------------------------------------------------------
// invalidation
// ---------------------------------------------------------------------------

async fn invalidate_removes_one_key_and_the_next_read_fetches(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    put(&cache, "user:1", "Alice").await;
    put(&cache, "user:10", "Judy").await;
    assert!(is_hit(&cache, "user:1").await);

    assert_eq!(cache.invalidate("user:1").await.unwrap(), 1);
    assert_eq!(cache.invalidate("user:1").await.unwrap(), 0, "already gone");
    assert_eq!(cache.invalidate("user:never").await.unwrap(), 0);

    let fetches = Fetches::new();
    let got = fetches
        .get(&cache, "user:1", Some("Alice 2".to_owned()))
        .await;
    assert_eq!(got.as_deref(), Some("Alice 2"), "fetched again");
    assert_eq!(fetches.count(), 1);
    assert!(
        is_hit(&cache, "user:10").await,
        "a key that merely shares a prefix of the name stays"
    );
    if let Some(keys) = redis_keys(&h).await {
        assert_eq!(
            keys.iter().filter(|k| k.contains("}:v:")).count(),
            2,
            "{keys:?}"
        );
    }
}

async fn invalidate_many_removes_every_key_given(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    for key in ["k:1", "k:2", "k:3"] {
        put(&cache, key, key).await;
    }
    let removed = cache
        .invalidate_many(&["k:1", "k:3", "k:missing"])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(!is_hit(&cache, "k:1").await, "k:1 fetched again");
    assert!(!is_hit(&cache, "k:3").await, "k:3 fetched again");
    assert!(is_hit(&cache, "k:2").await, "k:2 untouched");
    assert_eq!(
        cache.invalidate_many(&[] as &[String]).await.unwrap(),
        0,
        "nothing to do"
    );
    // Owned keys work too, and a duplicate counts once.
    let owned = vec!["k:2".to_owned(), "k:2".to_owned()];
    assert_eq!(cache.invalidate_many(&owned).await.unwrap(), 1);
    assert!(!is_hit(&cache, "k:2").await);
}

async fn invalidated_none_is_fetched_again(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    // A negative TTL the test never outlives: only the invalidation can
    // end the cached absence.
    let cache = builder(&h).negative_ttl(LONG).build().unwrap();
    let fetches = Fetches::new();
    let none = fetches.get(&cache, "user:5", None::<User>).await;
    assert_eq!(none, None);
    let still = fetches.get(&cache, "user:5", Some(user(5, "Eve"))).await;
    assert_eq!(still, None);
    assert_eq!(fetches.count(), 1);

    assert_eq!(cache.invalidate("user:5").await.unwrap(), 1);
    let found = fetches.get(&cache, "user:5", Some(user(5, "Eve"))).await;
    assert_eq!(found, Some(user(5, "Eve")));
    assert_eq!(fetches.count(), 2, "fetched again after the invalidation");
}

async fn invalidate_pattern_treats_user_text_and_redis_glob_characters_as_literal(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let team_keys = [
        "team:a*b:1",
        "team:axb:1",
        "team:a?b:1",
        "team:[a]:1",
        "team:a:1",
        "team:a\\b:1",
        "team:a%2Ab:1",
    ];
    for key in team_keys {
        put(&cache, key, key).await;
    }
    put(&cache, "other:a*b:1", "other").await;
    assert_eq!(Cache::<Json>::escape("a*b"), "a\\*b");

    // The user's `a*b` is literal: only `team:a*b:1` goes.
    let glob = format!("team:{}:*", Cache::<Json>::escape("a*b"));
    assert_eq!(cache.invalidate_pattern(&glob).await.unwrap(), 1, "{glob}");
    expect_only(&cache, &team_keys, "team:a*b:1").await;

    // Redis glob characters are literal: `?` is not "any one character"
    // (team:axb:1 stays), `[a]` is not a class (team:a:1 stays).
    assert_eq!(cache.invalidate_pattern("team:a?b:*").await.unwrap(), 1);
    expect_only(&cache, &team_keys, "team:a?b:1").await;
    assert_eq!(cache.invalidate_pattern("team:[a]:*").await.unwrap(), 1);
    expect_only(&cache, &team_keys, "team:[a]:1").await;
    // And so is an escaped backslash.
    let glob = format!("team:{}:*", Cache::<Json>::escape("a\\b"));
    assert_eq!(cache.invalidate_pattern(&glob).await.unwrap(), 1, "{glob}");
    expect_only(&cache, &team_keys, "team:a\\b:1").await;
    // A pattern without a wildcard is one exact key.
    assert_eq!(cache.invalidate_pattern("team:a:1").await.unwrap(), 1);
    expect_only(&cache, &team_keys, "team:a:1").await;

    // `team:*` takes every team key, and nothing else.
    assert_eq!(
        cache.invalidate_pattern("team:*").await.unwrap(),
        team_keys.len() as u64
    );
    for key in team_keys {
        assert!(!is_hit(&cache, key).await, "{key} was removed");
    }
    assert!(is_hit(&cache, "other:a*b:1").await, "other:* stays");
    if let Some(keys) = redis_keys(&h).await {
        assert_eq!(
            keys.iter().filter(|k| k.contains("}:v:")).count(),
            team_keys.len() + 1,
            "{keys:?}"
        );
    }
}

async fn invalidation_during_a_fetch_keeps_its_value_out_of_the_cache(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch("row:1", LONG, move || async move {
                    let _ = started_tx.send(());
                    let _ = go_rx.await;
                    // Read before the write below: now out of date.
                    Ok::<_, Infallible>(Some("before the write".to_owned()))
                })
                .await
        })
    };
    signalled("the fetch to start", started_rx).await;
    // The write's invalidation lands while the fetch is in flight: there
    // is no entry yet, only the fetch's lease, which it drops.
    assert_eq!(cache.invalidate("row:1").await.unwrap(), 0);
    go_tx.send(()).expect("the fetch is waiting");
    let got = reader.await.unwrap().unwrap();
    assert_eq!(
        got.as_deref(),
        Some("before the write"),
        "the caller still gets what it fetched"
    );
    let stats = h.store.stats();
    assert_eq!(stats.puts_ok, 0, "but it was not cached: {stats:?}");

    let fetches = Fetches::new();
    let after = fetches
        .get(&cache, "row:1", Some("after the write".to_owned()))
        .await;
    assert_eq!(after.as_deref(), Some("after the write"));
    assert_eq!(fetches.count(), 1, "the next read fetched");
}

async fn caller_that_goes_away_mid_fetch_releases_the_lease(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    // A lease left behind would hold for a minute and make the next caller
    // wait as long: past the test's safety net.
    let cache = builder(&h)
        .lease_ttl(Duration::from_secs(60))
        .fill_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let abandoned = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch("slow:1", LONG, move || async move {
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await;
                    Ok::<_, Infallible>(Some("never".to_owned()))
                })
                .await
        })
    };
    signalled("the fetch to start", started_rx).await;
    abandoned.abort();
    assert!(abandoned.await.unwrap_err().is_cancelled());

    let fetches = Fetches::new();
    let got = tokio::time::timeout(
        SIGNAL_TIMEOUT,
        cache.get_or_fetch("slow:1", LONG, fetches.of(Some("fetched".to_owned()))),
    )
    .await
    .expect("the abandoned lease was released")
    .unwrap();
    assert_eq!(got.as_deref(), Some("fetched"));
    assert_eq!(fetches.count(), 1);
    assert!(is_hit(&cache, "slow:1").await, "and cached");
}

/// Asserts that of `keys` only `gone` is a miss (and that `other:a*b:1`
/// is a hit); every key is cached again afterwards.
async fn expect_only(cache: &Cache, keys: &[&str], gone: &str) {
    for key in keys {
        assert_eq!(
            is_hit(cache, key).await,
            *key != gone,
            "{key} after removing {gone}"
        );
    }
    assert!(is_hit(cache, "other:a*b:1").await);
}

// ---------------------------------------------------------------------------
// values that do not decode
// ---------------------------------------------------------------------------

async fn value_of_another_type_is_a_miss_not_an_error(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let fetches = Fetches::new();
    let alice = fetches.get(&cache, "p:1", Some(user(1, "Alice"))).await;
    assert_eq!(alice, Some(user(1, "Alice")));

    // Read as a string: the JSON object does not decode, so it is a miss,
    // fetched and replaced.
    let text = fetches
        .get(&cache, "p:1", Some("a string".to_owned()))
        .await;
    assert_eq!(text.as_deref(), Some("a string"));
    assert_eq!(fetches.count(), 2, "the other type was a miss");
    // Now the string is what is cached.
    let hit = fetches.get(&cache, "p:1", Some("other".to_owned())).await;
    assert_eq!(hit.as_deref(), Some("a string"));
    assert_eq!(fetches.count(), 2);
    // And a User reader misses again.
    let back = fetches.get(&cache, "p:1", Some(user(1, "Alice 2"))).await;
    assert_eq!(back, Some(user(1, "Alice 2")));
    assert_eq!(fetches.count(), 3);
}

#[cfg(feature = "postcard")]
async fn value_of_another_codec_is_a_miss(backend: Backend, name: &str) {
    use tower_cache_aside::codec::Postcard;

    let h = backend.harness(name).await;
    let json = cache_of(&h);
    let postcard = builder(&h).codec::<Postcard>().build().unwrap();
    let fetches = Fetches::new();

    // JSON writes, postcard reads: a miss, not a wrong value.
    let written = fetches.get(&json, "p:json", Some(user(1, "json"))).await;
    assert_eq!(written, Some(user(1, "json")));
    let read = fetches
        .get(&postcard, "p:json", Some(user(1, "postcard")))
        .await;
    assert_eq!(read, Some(user(1, "postcard")));
    assert_eq!(fetches.count(), 2, "the JSON value was a miss for postcard");
    let hit = fetches
        .get(&postcard, "p:json", Some(user(1, "other")))
        .await;
    assert_eq!(hit, Some(user(1, "postcard")), "postcard cached its own");
    assert_eq!(fetches.count(), 2);

    // Postcard writes, JSON reads.
    let written = fetches
        .get(&postcard, "p:postcard", Some(user(2, "postcard")))
        .await;
    assert_eq!(written, Some(user(2, "postcard")));
    let read = fetches
        .get(&json, "p:postcard", Some(user(2, "json")))
        .await;
    assert_eq!(read, Some(user(2, "json")));
    assert_eq!(fetches.count(), 4, "the postcard value was a miss for JSON");

    // A cached absence is per codec too.
    let none = fetches.get(&postcard, "p:none", None::<User>).await;
    assert_eq!(none, None);
    let found = fetches.get(&json, "p:none", Some(user(3, "json"))).await;
    assert_eq!(found, Some(user(3, "json")));
    assert_eq!(fetches.count(), 6);

    // get_many_or_fetch classifies the same way: a JSON value is a miss
    // for a postcard batch.
    put(&json, "p:many", "json text").await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let many = postcard
        .get_many_or_fetch(
            &["p:many", "p:absent"],
            LONG,
            fetch_many_from(&asked, &[("p:many", "postcard text")]),
        )
        .await
        .unwrap();
    assert_eq!(many, [Some("postcard text".to_owned()), None]);
    assert_eq!(*asked.lock().unwrap(), [["p:many", "p:absent"]]);
    let hit = fetches
        .get(&postcard, "p:many", Some("other".to_owned()))
        .await;
    assert_eq!(hit.as_deref(), Some("postcard text"));
    assert_eq!(fetches.count(), 6);
}

#[cfg(feature = "postcard")]
async fn postcard_value_of_another_type_is_a_miss(backend: Backend, name: &str) {
    use tower_cache_aside::codec::Postcard;

    let h = backend.harness(name).await;
    let cache = builder(&h).codec::<Postcard>().build().unwrap();
    let fetches = Fetches::new();
    let text = fetches
        .get(&cache, "t:1", Some("not a bool".to_owned()))
        .await;
    assert_eq!(text.as_deref(), Some("not a bool"));
    // Its first byte (the length, 10) is no bool.
    let flag = fetches.get(&cache, "t:1", Some(true)).await;
    assert_eq!(flag, Some(true));
    assert_eq!(fetches.count(), 2, "the string was a miss for a bool");
    let hit = fetches.get(&cache, "t:1", Some(false)).await;
    assert_eq!(hit, Some(true));
    assert_eq!(fetches.count(), 2);
}

/// Postcard is not self-describing: a value of another type may decode
/// from the start of the stored bytes. A `User { id: 1, name: "postcard" }`
/// is `01 08 "postcard"`, whose start reads as the one-byte string
/// `"\u{8}"`; the eight bytes left over must make it a miss, not that
/// wrong value.
#[cfg(feature = "postcard")]
async fn postcard_value_with_bytes_left_over_is_a_miss(backend: Backend, name: &str) {
    use tower_cache_aside::codec::Postcard;

    let h = backend.harness(name).await;
    let cache = builder(&h).codec::<Postcard>().build().unwrap();
    let fetches = Fetches::new();
    let written = fetches.get(&cache, "t:2", Some(user(1, "postcard"))).await;
    assert_eq!(written, Some(user(1, "postcard")));
    let text = fetches.get(&cache, "t:2", Some("fetched".to_owned())).await;
    assert_eq!(
        text.as_deref(),
        Some("fetched"),
        "a User read as a String is a miss"
    );
    assert_eq!(fetches.count(), 2);
}

// ---------------------------------------------------------------------------
// stale-while-revalidate
// ---------------------------------------------------------------------------

async fn stale_value_is_served_at_once_while_one_background_fetch_refreshes_it(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let ttl = Duration::from_secs(1);
    let cache = builder(&h)
        .stale_while_revalidate(Duration::from_secs(30))
        .build()
        .unwrap();
    put_with_ttl(&cache, "s:1", "old", ttl).await;
    outlive(ttl).await;
    let puts_before = h.store.stats().puts_finished();

    // The refresh announces its start, then waits for the test's go.
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let refresh = {
        let refreshes = refreshes.clone();
        move || async move {
            refreshes.fetch_add(1, Ordering::SeqCst);
            let _ = started_tx.send(());
            let _ = go_rx.await;
            Ok::<_, Infallible>(Some("new".to_owned()))
        }
    };
    // The refresh is held until this returns: a caller that waited for it
    // would never return.
    let stale = tokio::time::timeout(SIGNAL_TIMEOUT, cache.get_or_fetch("s:1", LONG, refresh))
        .await
        .expect("the stale value is returned without waiting for the refresh")
        .unwrap();
    assert_eq!(stale.as_deref(), Some("old"));
    signalled("the background refresh to start", started_rx).await;

    // While it runs, others get the stale value and start no fetch.
    let fetches = Fetches::new();
    for _ in 0..5 {
        let got = fetches
            .get(&cache, "s:1", Some("duplicate".to_owned()))
            .await;
        assert_eq!(got.as_deref(), Some("old"));
    }
    assert_eq!(fetches.count(), 0, "one refresh at a time");

    go_tx.send(()).expect("the refresh is waiting");
    let stats = h
        .store
        .wait_until("the refreshed value's write", |s| {
            s.puts_finished() > puts_before
        })
        .await;
    assert_eq!(
        stats.puts_ok,
        stats.puts_finished(),
        "the refresh wrote: {stats:?}"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);

    // Fresh now (for the TTL the refreshing call gave): no fetch.
    let fresh = fetches.get(&cache, "s:1", Some("other".to_owned())).await;
    assert_eq!(fresh.as_deref(), Some("new"));
    assert_eq!(fetches.count(), 0);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "one background fetch");
}

async fn put_with_ttl(cache: &Cache, key: &str, value: &str, ttl: Duration) {
    let fetches = Fetches::new();
    let got = cache
        .get_or_fetch(key, ttl, fetches.of(Some(value.to_owned())))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(value));
    assert_eq!(fetches.count(), 1);
}

// ---------------------------------------------------------------------------
// long keys
// ---------------------------------------------------------------------------

async fn long_key_is_stored_hit_and_invalidated(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let cache = cache_of(&h);
    let head = format!("long:{}", "x".repeat(650));
    // Two long keys that differ only past the part a store key keeps.
    let (one, two) = (format!("{head}:1"), format!("{head}:2"));
    assert!(one.len() > 600);
    put(&cache, &one, "first").await;
    put(&cache, &two, "second").await;
    let fetches = Fetches::new();
    for (key, value) in [(&one, "first"), (&two, "second")] {
        let got = fetches.get(&cache, key, Some("other".to_owned())).await;
        assert_eq!(got.as_deref(), Some(value), "a hit of its own value");
    }
    assert_eq!(fetches.count(), 0);
    if let Some(keys) = redis_keys(&h).await {
        let entries: Vec<_> = keys.iter().filter(|k| k.contains("}:v:")).collect();
        assert_eq!(entries.len(), 2, "{keys:?}");
        assert!(
            entries.iter().all(|k| k.len() < one.len()),
            "the Redis key names are bounded: {entries:?}"
        );
    }

    // get_many_or_fetch reads them too.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let many = cache
        .get_many_or_fetch(&[&two, &one], LONG, fetch_many_from(&asked, &[]))
        .await
        .unwrap();
    assert_eq!(many, [Some("second".to_owned()), Some("first".to_owned())]);
    assert!(asked.lock().unwrap().is_empty());

    assert_eq!(cache.invalidate(&one).await.unwrap(), 1);
    assert!(!is_hit(&cache, &one).await, "fetched again");
    assert!(is_hit(&cache, &two).await, "the other long key stays");
    // A pattern reaches long keys too.
    assert_eq!(cache.invalidate_pattern("long:*").await.unwrap(), 2);
    assert!(!is_hit(&cache, &two).await);
}

// ---------------------------------------------------------------------------
// fail-open while Redis is down
// ---------------------------------------------------------------------------

/// Reads `key` until a hit (bounded in count and time), pacing retries
/// while the client reconnects; every answer must be `value`.
async fn until_hit(cache: &Cache, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    for attempt in 0..400 {
        assert!(Instant::now() < deadline, "no hit after {attempt} attempts");
        let fetches = Fetches::new();
        let got = fetches.get(cache, key, Some(value.to_owned())).await;
        assert_eq!(got.as_deref(), Some(value), "attempt {attempt}");
        if fetches.count() == 0 {
            return;
        }
        // Pacing between retries while fred reconnects.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no hit for {key}");
}

#[tokio::test]
async fn redis_down_fails_open_and_caching_resumes_after_restart() {
    let server = RedisServer::launch();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let cache = Cache::builder(store)
        .prefix("t:aside-outage:")
        .store_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    until_hit(&cache, "a", "fresh a").await;

    server.stop();
    assert!(!server.is_running());
    // Past the circuit breaker's threshold (5 failures) too.
    for round in 0..8 {
        let fetches = Fetches::new();
        let got = fetches
            .get(&cache, "a", Some(format!("down {round}")))
            .await;
        assert_eq!(got, Some(format!("down {round}")), "round {round}");
        assert_eq!(fetches.count(), 1, "round {round}: fetched");
        let none = fetches.get(&cache, "n", None::<String>).await;
        assert_eq!(none, None);
        assert_eq!(fetches.count(), 2, "round {round}: fetched");

        let asked = Arc::new(Mutex::new(Vec::new()));
        let many = cache
            .get_many_or_fetch(
                &["x", "a", "y", "x"],
                LONG,
                fetch_many_from(&asked, &[("x", "X"), ("a", "A")]),
            )
            .await
            .unwrap();
        assert_eq!(
            many,
            [
                Some("X".to_owned()),
                Some("A".to_owned()),
                None,
                Some("X".to_owned())
            ],
            "round {round}"
        );
        assert_eq!(*asked.lock().unwrap(), [["x", "a", "y"]], "round {round}");

        assert!(cache.invalidate("a").await.is_err(), "round {round}");
        assert!(cache.invalidate_many(&["a", "x"]).await.is_err());
        assert!(cache.invalidate_pattern("*").await.is_err());
    }

    server.start();
    assert!(server.is_running());
    until_hit(&cache, "a", "after restart").await;
    // The batch API caches again too.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut attempts = 0;
    loop {
        assert!(Instant::now() < deadline && attempts < 400, "no batch hit");
        attempts += 1;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let many = cache
            .get_many_or_fetch(
                &["a", "b"],
                LONG,
                fetch_many_from(&asked, &[("b", "B after restart")]),
            )
            .await
            .unwrap();
        assert_eq!(
            many,
            [
                Some("after restart".to_owned()),
                Some("B after restart".to_owned())
            ]
        );
        if asked.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.invalidate("a").await.unwrap(), 1);
}

// ---------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------

#[test]
fn builder_rejects_invalid_settings() {
    let store = MemoryStore::new;
    assert!(Cache::builder(store()).build().is_ok());
    for bad in ["a{b", "a}b", "a*b", "a b", "a?", "[a]", "a\\b"] {
        assert!(
            Cache::builder(store()).prefix(bad).build().is_err(),
            "prefix {bad:?}"
        );
    }
    assert!(Cache::builder(store())
        .negative_ttl(Duration::ZERO)
        .build()
        .is_err());
    assert!(Cache::builder(store())
        .store_timeout(Duration::ZERO)
        .build()
        .is_err());
    assert!(Cache::builder(store())
        .lease_ttl(Duration::ZERO)
        .build()
        .is_err());
    assert!(Cache::builder(store()).ttl_jitter(1.0).build().is_ok());
    assert!(Cache::builder(store()).ttl_jitter(1.5).build().is_err());
    assert!(Cache::builder(store()).ttl_jitter(-0.1).build().is_err());
    assert!(Cache::builder(store())
        .ttl_jitter(f64::NAN)
        .build()
        .is_err());
}

/// A batch read serves an entry only while its expiry is known, like a
/// single read: should `maxmemory` evict a resource's expiry set, its
/// entries are misses (and are written again), not served forever.
#[tokio::test]
async fn redis_get_many_reads_no_entry_whose_expiry_is_lost() {
    let h = Backend::Redis.harness("get_many_expiry").await;
    let cache = cache_of(&h);
    put(&cache, "g:1", "one").await;
    put(&cache, "g:2", "two").await;
    let server = h.redis.as_ref().expect("a Redis harness");
    let raw = fred_client(&server.url()).await;
    // The expiry set of g:1 is lost (as an eviction would), its hash kept.
    let times = format!("{}{{g:1}}:t", h.prefix);
    let removed: i64 = fred::interfaces::KeysInterface::del(&raw, &times)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the expiry set {times} existed");
    let entries = cached_fields(&raw, &format!("{}{{g:1}}", h.prefix)).await;
    assert_eq!(entries.len(), 1, "the entry itself is still there");

    let asked = Arc::new(Mutex::new(Vec::new()));
    let values = cache
        .get_many_or_fetch(
            &["g:1", "g:2"],
            LONG,
            fetch_many_from(&asked, &[("g:1", "fresh one")]),
        )
        .await
        .unwrap();
    assert_eq!(
        values,
        [Some("fresh one".to_owned()), Some("two".to_owned())]
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [["g:1"]],
        "the entry of unknown expiry was a miss"
    );
}
