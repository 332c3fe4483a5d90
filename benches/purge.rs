//! Purge cost against the size of the keyspace.
//!
//! Times, with 10k, 100k and 1M unrelated keys in Redis:
//!
//! - `Purger::purge_path("/users/1")`: one resource of 10 variants, purged
//!   through its index;
//! - `Purger::purge_glob("/reports/2026-*")`: 100 resources of 2 variants,
//!   found by `SCAN MATCH` over the whole keyspace;
//! - a plain `DEL` of one key, as the floor of one round trip.
//!
//! The entries to purge are written through the layer (GET requests to a
//! `service_fn` origin), so their indexes exist, before every repetition.
//! The three operations alternate within each repetition, in a rotating
//! order, each timed with `Instant` around the awaited call.
//!
//! Runs its own `redis-server` on a free loopback port (never 6379) and
//! stops it at the end. Prints a Markdown table and writes the same as JSON
//! to `target/bench-purge.json`.
//!
//! ```text
//! cargo bench --bench purge
//! ```
//!
//! Run without cargo bench's `--bench` flag (`cargo test --all-targets`),
//! it only checks itself: 10k keys, 3 repetitions, no JSON.

#[path = "../bench/src/common.rs"]
mod common;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};
use fred::types::{CustomCommand, Value};
use futures_util::{StreamExt, TryStreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_cache_aside::store::{
    EntryKey, LeaseRequest, LeaseToken, Lookup, ResourceKey, ResourcePattern, StoreFuture,
};
use tower_cache_aside::{CacheAsideLayer, Purger, RedisStore, Store};

use redis_server::RedisServer;

/// Unrelated keys in Redis, grown in place from one size to the next.
const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Timed repetitions of each operation per size.
const REPS: usize = 30;
/// Timed repetitions in the self-check run (without `--bench`).
const SMOKE_REPS: usize = 3;
/// Timed repetitions of the glob purge from 1M keys on (each scans it all).
const GLOB_REPS_LARGE: usize = 10;
/// Untimed repetitions before the timed ones, per size (scripts loaded,
/// connection warm).
const WARMUP: usize = 2;

/// The resource purged by path, and its variants (one per query).
const USER_PATH: &str = "/users/1";
const USER_VARIANTS: usize = 10;
/// The glob, and the resources and variants it covers.
const REPORT_GLOB: &str = "/reports/2026-*";
const REPORTS: usize = 100;
const REPORT_VARIANTS: usize = 2;
/// The key of the plain `DEL`.
const DEL_KEY: &str = "bench:del-target";

/// Key prefix of the layer.
const PREFIX: &str = "bench:";
/// Size of the value of each unrelated key and of each origin body.
const VALUE_BYTES: usize = 200;
/// Keys per `MSET`, and `MSET`s in flight at once.
const BATCH: usize = 1000;
const IN_FLIGHT: usize = 8;
/// Bound on growing the keyspace to one size.
const POPULATE_LIMIT: Duration = Duration::from_secs(180);
/// Bound on waiting for the layer's background writes of one repetition.
const WRITES_LIMIT: Duration = Duration::from_secs(20);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (sizes, reps) = if full {
        (&SIZES[..], REPS)
    } else {
        (&SIZES[..1], SMOKE_REPS)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Dropped (and so stopped) on a panic too.
    let server = RedisServer::launch();
    let report = runtime.block_on(run(&server, sizes, reps));
    server.stop();
    drop(runtime);

    println!();
    println!("{}", report.markdown());
    if !full {
        println!("self-check only (no --bench): no JSON written");
        return;
    }
    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the target directory");
    }
    let json = serde_json::to_string_pretty(&report.json()).expect("serialize the report");
    std::fs::write(&path, json + "\n").expect("write the JSON report");
    println!("written to {}", path.display());
}

/// `target/bench-purge.json`, or under `CARGO_TARGET_DIR` when set.
fn report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-purge.json")
}

async fn run(server: &RedisServer, sizes: &[usize], reps: usize) -> Report {
    let client = common::connect(&server.url())
        .await
        .expect("connect to the bench redis-server");
    let store = Arc::new(PutCounter::new(RedisStore::from(client.clone())));
    let layer = CacheAsideLayer::builder(store.clone() as Arc<dyn Store>)
        .prefix(PREFIX)
        .store_timeout(Duration::from_secs(5))
        .purge_timeout(Duration::from_secs(60))
        .build()
        .expect("valid layer configuration");
    let bench = Bench {
        client: client.clone(),
        store,
        purger: layer.purger(),
        layer,
    };

    let mut report = Report {
        machine: common::machine(),
        redis_version: common::info_field(&client, "server", "redis_version").await,
        rows: Vec::new(),
    };
    println!(
        "purge bench: redis-server {} on port {}, {}",
        report.redis_version,
        server.port(),
        report.machine
    );

    let mut present = 0;
    for &n in sizes {
        let started = Instant::now();
        match tokio::time::timeout(POPULATE_LIMIT, grow(&client, present, n)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("populating {n} unrelated keys failed: {error}"),
            Err(_) => panic!(
                "populating {n} unrelated keys took more than {POPULATE_LIMIT:?}; \
                 is the machine overloaded or short of memory?"
            ),
        }
        present = n;
        let keys = dbsize(&client).await;
        assert_eq!(keys, n as u64, "DBSIZE after growing to {n} keys");
        println!(
            "{n} unrelated keys in Redis ({} used) after {:.1} s",
            common::info_field(&client, "memory", "used_memory_human").await,
            started.elapsed().as_secs_f64()
        );

        let glob_reps = if n >= 1_000_000 {
            GLOB_REPS_LARGE.min(reps)
        } else {
            reps
        };
        let mut path = Vec::with_capacity(reps);
        let mut glob = Vec::with_capacity(glob_reps);
        let mut del = Vec::with_capacity(reps);
        let started = Instant::now();
        for rep in 0..WARMUP + reps {
            let with_glob = rep < WARMUP + glob_reps;
            bench.prepare(with_glob).await;
            let mut ops = vec![Op::Path, Op::Del];
            if with_glob {
                ops.insert(1, Op::Glob);
            }
            let shift = rep % ops.len();
            ops.rotate_left(shift);
            for op in ops {
                let elapsed = bench.time(op).await;
                if rep >= WARMUP {
                    match op {
                        Op::Path => path.push(elapsed),
                        Op::Glob => glob.push(elapsed),
                        Op::Del => del.push(elapsed),
                    }
                }
            }
        }
        let del = Summary::of(&del);
        for (op, summary) in [
            (Op::Path, Summary::of(&path)),
            (Op::Glob, Summary::of(&glob)),
            (Op::Del, del),
        ] {
            report.rows.push(Row {
                keys: n,
                op,
                summary,
                over_del: summary.median_us / del.median_us,
            });
        }
        println!(
            "timed {n}: {} repetitions in {:.1} s",
            WARMUP + reps,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            dbsize(&client).await,
            n as u64,
            "only the unrelated keys remain"
        );
    }
    client.quit().await.expect("QUIT");
    report
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Path,
    Glob,
    Del,
}

impl Op {
    fn label(self) -> String {
        match self {
            Op::Path => format!("purge_path(\"{USER_PATH}\"), {USER_VARIANTS} entries"),
            Op::Glob => format!(
                "purge_glob(\"{REPORT_GLOB}\"), {} entries",
                REPORTS * REPORT_VARIANTS
            ),
            Op::Del => "plain DEL of one key".to_owned(),
        }
    }

    fn id(self) -> &'static str {
        match self {
            Op::Path => "purge_path",
            Op::Glob => "purge_glob",
            Op::Del => "del",
        }
    }
}

struct Bench {
    client: Client,
    store: Arc<PutCounter>,
    layer: CacheAsideLayer,
    purger: Purger,
}

impl Bench {
    /// Writes the entries one repetition purges through the layer, sets the
    /// `DEL` key, and waits until every write has landed.
    async fn prepare(&self, with_glob: bool) {
        let before = self.store.done();
        let mut expected = USER_VARIANTS;
        for v in 0..USER_VARIANTS {
            self.get(&format!("{USER_PATH}?v={v}")).await;
        }
        if with_glob {
            expected += REPORTS * REPORT_VARIANTS;
            for r in 0..REPORTS {
                for v in 0..REPORT_VARIANTS {
                    self.get(&format!("/reports/2026-{r}?v={v}")).await;
                }
            }
        }
        let value = Bytes::from(vec![b'd'; VALUE_BYTES]);
        let () = self
            .client
            .set(DEL_KEY, value, None, None, false)
            .await
            .expect("SET the DEL key");
        let (ok, failed) = self.store.wait(before.0 + before.1 + expected).await;
        assert_eq!(failed, before.1, "a write of the layer failed");
        assert_eq!(ok, before.0 + expected, "writes of the layer");
        let users: u64 = self
            .client
            .hlen(format!("{PREFIX}{{{USER_PATH}}}"))
            .await
            .expect("HLEN");
        assert_eq!(
            users, USER_VARIANTS as u64,
            "variants in the resource's hash"
        );
    }

    /// A GET through the layer, read to the end; it must be a stored miss.
    async fn get(&self, target: &str) {
        let origin = service_fn(|req: Request<()>| async move {
            let mut body = format!("{{\"path\":\"{}\",\"data\":\"", req.uri());
            while body.len() < VALUE_BYTES - 2 {
                body.push('x');
            }
            body.push_str("\"}");
            let response = Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("origin response");
            Ok::<_, Infallible>(response)
        });
        let request = Request::get(target)
            .header("host", "bench.test")
            .body(())
            .expect("request");
        let response = self
            .layer
            .layer(origin)
            .oneshot(request)
            .await
            .unwrap_or_else(|e: Infallible| match e {});
        let status = response.headers().get("cache-status").cloned();
        response
            .into_body()
            .collect()
            .await
            .expect("read the body to the end");
        assert_eq!(
            status.as_ref().and_then(|s| s.to_str().ok()),
            Some("tower-cache-aside; fwd=miss; stored"),
            "GET {target} was not a stored miss (left over from the last repetition?)"
        );
    }

    /// Runs one operation and returns how long it took.
    async fn time(&self, op: Op) -> Duration {
        match op {
            Op::Path => {
                let started = Instant::now();
                let removed = self.purger.purge_path(USER_PATH).await;
                let elapsed = started.elapsed();
                assert_eq!(removed.expect("purge_path"), USER_VARIANTS as u64);
                elapsed
            }
            Op::Glob => {
                let started = Instant::now();
                let removed = self.purger.purge_glob(REPORT_GLOB).await;
                let elapsed = started.elapsed();
                assert_eq!(
                    removed.expect("purge_glob"),
                    (REPORTS * REPORT_VARIANTS) as u64
                );
                elapsed
            }
            Op::Del => {
                let started = Instant::now();
                let removed: Result<i64, _> = self.client.del(DEL_KEY).await;
                let elapsed = started.elapsed();
                assert_eq!(removed.expect("DEL"), 1);
                elapsed
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// Adds the unrelated keys `from..to`, shaped like other cache resources
/// (a hash `bench:{/other/<i>}` with one 200-byte entry field), a batch of
/// keys per script.
async fn grow(client: &Client, from: usize, to: usize) -> Result<(), fred::error::Error> {
    const GROW: &str =
        "for i = 1, #KEYS do redis.call('HSET', KEYS[i], ARGV[1], ARGV[2]) end return #KEYS";
    let value = Bytes::from(vec![b'u'; VALUE_BYTES]);
    let field = format!("v:{:032x}", 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835_u128);
    let batches = (from..to).step_by(BATCH).map(|start| {
        let keys: Vec<String> = (start..(start + BATCH).min(to))
            .map(unrelated_key)
            .collect();
        client.eval::<i64, _, _, _>(
            GROW,
            keys,
            vec![Value::from(field.as_str()), Value::Bytes(value.clone())],
        )
    });
    futures_util::stream::iter(batches)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<i64>>()
        .await?;
    Ok(())
}

fn unrelated_key(i: usize) -> String {
    format!("{PREFIX}{{/other/{i}}}")
}

async fn dbsize(client: &Client) -> u64 {
    let size: Value = client
        .custom(
            CustomCommand::new_static("DBSIZE", None, false),
            Vec::<String>::new(),
        )
        .await
        .expect("DBSIZE");
    size.as_u64().expect("DBSIZE is an integer")
}

// ---------------------------------------------------------------------------
// A store that counts the layer's writes, so a repetition can wait for them
// ---------------------------------------------------------------------------

/// Forwards every call to a [`RedisStore`]; counts finished puts. Purges
/// are forwarded as they are (the same future), so they cost nothing more.
struct PutCounter {
    inner: RedisStore,
    /// Puts that succeeded, and that failed.
    puts: tokio::sync::watch::Sender<(usize, usize)>,
}

impl PutCounter {
    fn new(inner: RedisStore) -> PutCounter {
        PutCounter {
            inner,
            puts: tokio::sync::watch::Sender::new((0, 0)),
        }
    }

    fn done(&self) -> (usize, usize) {
        *self.puts.borrow()
    }

    /// Waits until `n` puts in all are over.
    async fn wait(&self, n: usize) -> (usize, usize) {
        let mut rx = self.puts.subscribe();
        let waited =
            tokio::time::timeout(WRITES_LIMIT, rx.wait_for(|(ok, failed)| ok + failed >= n)).await;
        match waited {
            Ok(Ok(done)) => *done,
            Ok(Err(_)) => unreachable!("the sender lives in self"),
            Err(_) => panic!(
                "the layer's writes did not land within {WRITES_LIMIT:?}: {:?} of {n} done",
                self.done()
            ),
        }
    }
}

impl Store for PutCounter {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        self.inner.get(key)
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = self.inner.put(key, value, ttl).await;
            self.puts.send_modify(|(ok, failed)| match result {
                Ok(()) => *ok += 1,
                Err(_) => *failed += 1,
            });
            result
        })
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        self.inner.lookup(key, lease)
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        self.inner.lease(key, lease)
    }

    /// The layer's writes: counted like puts (a lost lease counts as failed).
    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let result = self.inner.fill(key, value, ttl, token).await;
            self.puts.send_modify(|(ok, failed)| match result {
                Ok(true) => *ok += 1,
                _ => *failed += 1,
            });
            result
        })
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
// Results
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Summary {
    reps: usize,
    min_us: f64,
    median_us: f64,
    max_us: f64,
}

impl Summary {
    fn of(times: &[Duration]) -> Summary {
        assert!(!times.is_empty(), "no timings");
        let mut us: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mid = us.len() / 2;
        let median_us = if us.len() % 2 == 0 {
            (us[mid - 1] + us[mid]) / 2.0
        } else {
            us[mid]
        };
        Summary {
            reps: us.len(),
            min_us: us[0],
            median_us,
            max_us: us[us.len() - 1],
        }
    }
}

struct Row {
    keys: usize,
    op: Op,
    summary: Summary,
    /// Median of this operation over the median of `DEL`, at this size.
    over_del: f64,
}

struct Report {
    machine: String,
    redis_version: String,
    rows: Vec<Row>,
}

impl Report {
    fn markdown(&self) -> String {
        let mut out = String::from(
            "| unrelated keys | operation | reps | min (µs) | median (µs) | max (µs) | median / DEL median |\n\
             | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            let s = row.summary;
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} |\n",
                thousands(row.keys),
                row.op.label(),
                s.reps,
                s.min_us,
                s.median_us,
                s.max_us,
                row.over_del
            ));
        }
        out.push_str(&format!(
            "\nredis-server {} on loopback; {}",
            self.redis_version, self.machine
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "unrelated_keys": row.keys,
                    "operation": row.op.id(),
                    "label": row.op.label(),
                    "reps": row.summary.reps,
                    "min_us": round1(row.summary.min_us),
                    "median_us": round1(row.summary.median_us),
                    "max_us": round1(row.summary.max_us),
                    "median_over_del": round1(row.over_del),
                })
            })
            .collect();
        serde_json::json!({
            "command": "cargo bench --bench purge",
            "machine": self.machine,
            "redis_version": self.redis_version,
            "rows": rows,
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
