//! The hit path in process, without HTTP: what one cache hit costs the
//! app thread, in CPU time and in heap allocations, against a hand-written
//! fred `GET` of the same bytes (the floor of any Redis-backed hit) and a
//! handler answering from memory.
//!
//! ```text
//! cargo run --release -p bench --bin hit_path [-- --hits N --concurrency C]
//! ```
//!
//! `--store-timeout MS` sets the layer's store timeout (50 ms by default);
//! under `valgrind`, where wall time stretches many times over, give it a
//! few seconds so that no hit turns into a timeout miss.
//!
//! Starts its own `redis-server` on a free loopback port. Each contender
//! runs N hits, C at a time, on one single-threaded Tokio runtime, three
//! times in turn; the table gives the median of the three. With
//! `--workers W`, the runtime is the multi-threaded one with W workers
//! (what `#[tokio::main]` builds), the C callers are tasks spread over
//! them, and the CPU time is the whole process's (every worker, fred's
//! router task included). Allocations are
//! counted by `stats_alloc`'s global allocator wrapper (every `alloc` and `realloc` of
//! any thread of this process, so fred's router task is included).

#[path = "../common.rs"]
mod common;
#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

use std::alloc::System;
use std::convert::Infallible;

use bytes::Bytes;
use fred::interfaces::{ClientLike, KeysInterface};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{Layer, Service, ServiceExt};
use tower_cache_aside::{CacheAsideLayer, MemoryStore, RedisStore};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

const PATH: &str = "/items/42";
fn body(bytes: usize) -> Bytes {
    let mut text = String::from(r#"{"id":"42","name":"item 42","data":""#);
    while text.len() + 2 < bytes {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

/// The whole body of a response (the harness reads every answer).
async fn body_of<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

fn json(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn request() -> Request<Full<Bytes>> {
    Request::builder()
        .uri(PATH)
        .header(header::HOST, "bench.local")
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    cpu_ns_per_hit: f64,
    allocs_per_hit: f64,
}

/// CPU time of the whole process (user + system), in ns.
fn process_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|t| t.parse::<u64>().ok()))
        .sum();
    // Clock ticks are 100 Hz on Linux.
    ticks * 10_000_000
}

fn thread_cpu_ns() -> u64 {
    let path = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|l| l.file_name().map(|t| t.to_owned()));
    let Some(tid) = path else { return 0 };
    let text = std::fs::read_to_string(
        std::path::Path::new("/proc/self/task")
            .join(tid)
            .join("schedstat"),
    )
    .unwrap_or_default();
    text.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Runs `hits` calls of `one`, `concurrency` at a time, and checks that
/// each answers `expected` bytes. On a multi-threaded runtime (`spread`),
/// the callers are `concurrency` spawned tasks and the CPU time is the
/// process's.
async fn drive<F, Fut>(
    hits: usize,
    concurrency: usize,
    expected: usize,
    spread: bool,
    one: F,
) -> Figures
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Bytes> + Send + 'static,
{
    if spread {
        let one = std::sync::Arc::new(one);
        let allocs_before = allocations();
        let cpu = process_cpu_ns();
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..concurrency {
            let one = one.clone();
            let share = hits / concurrency + usize::from(caller < hits % concurrency);
            tasks.spawn(async move {
                for _ in 0..share {
                    let bytes = one().await;
                    assert_eq!(bytes.len(), expected, "a hit answered the wrong body");
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("a caller panicked");
        }
        return Figures {
            cpu_ns_per_hit: (process_cpu_ns() - cpu) as f64 / hits as f64,
            allocs_per_hit: (allocations() - allocs_before) as f64 / hits as f64,
        };
    }
    let allocs_before = allocations();
    let cpu = thread_cpu_ns();
    let mut running = FuturesUnordered::new();
    let mut started = 0;
    let mut done = 0;
    while done < hits {
        while started < hits && running.len() < concurrency {
            running.push(one());
            started += 1;
        }
        if let Some(bytes) = running.next().await {
            assert_eq!(bytes.len(), expected, "a hit answered the wrong body");
            done += 1;
        }
    }
    Figures {
        cpu_ns_per_hit: (thread_cpu_ns() - cpu) as f64 / hits as f64,
        allocs_per_hit: (allocations() - allocs_before) as f64 / hits as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut hits = 50_000usize;
    let mut concurrency = 32usize;
    let mut only: Option<String> = None;
    let mut body_bytes = 200usize;
    let mut store_timeout = None;
    let mut workers = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let text = args.next();
        let value = text.as_deref().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--hits", Some(v)) => hits = v,
            ("--concurrency", Some(v)) => concurrency = v,
            ("--workers", Some(v)) => workers = v,
            ("--body", Some(v)) if v >= 40 => body_bytes = v,
            ("--only", _) if text.is_some() => only = text,
            ("--store-timeout", Some(ms)) => {
                store_timeout = Some(std::time::Duration::from_millis(ms as u64))
            }
            _ => {
                eprintln!("usage: hit_path [--hits N] [--concurrency C] [--only static|hand|Redis|Memory] [--body BYTES] [--store-timeout MS] [--workers W]");
                std::process::exit(2);
            }
        }
    }
    let server = redis_server::RedisServer::launch();
    let runtime = if workers > 0 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("runtime");
    runtime.block_on(run(
        &server.url(),
        hits,
        concurrency,
        only.as_deref(),
        body_bytes,
        store_timeout,
        workers,
    ));
    server.stop();
}

async fn run(
    url: &str,
    hits: usize,
    concurrency: usize,
    only: Option<&str>,
    body_bytes: usize,
    store_timeout: Option<std::time::Duration>,
    workers: usize,
) {
    let spread = workers > 0;
    let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
    let body = body(body_bytes);
    let client = common::connect(url).await.expect("connect");
    client
        .set::<(), _, _>("hw:42", body.clone(), None, None, false)
        .await
        .expect("set");

    let origin = {
        let body = body.clone();
        tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let body = body.clone();
            async move { Ok::<_, Infallible>(json(body)) }
        })
    };
    let redis_store = RedisStore::connect(url).await.expect("store");
    let mut tca_redis = CacheAsideLayer::builder(redis_store);
    if let Some(timeout) = store_timeout {
        tca_redis = tca_redis.store_timeout(timeout);
    }
    let tca_redis = tca_redis.build().expect("layer").layer(origin.clone());
    let tca_memory = CacheAsideLayer::builder(MemoryStore::new())
        .build()
        .expect("layer")
        .layer(origin.clone());
    // Fill both caches (and wait for the fills to land).
    for service in [&tca_redis, &tca_memory] {
        for _ in 0..50 {
            let response = service.clone().oneshot(request()).await.expect("call");
            let status = response
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let _ = response.into_body().collect().await;
            if status.contains("hit") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    if std::env::var_os("HIT_PATH_SIZES").is_some() {
        let future = tca_redis.clone().call(request());
        println!("ResponseFuture: {} bytes", std::mem::size_of_val(&future));
        drop(future);
    }
    let names = [
        "static",
        "hand-written GET",
        "tca RedisStore",
        "tca MemoryStore",
    ];
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); names.len()];
    for _repeat in 0..3 {
        if wanted(names[0]) {
            let origin = origin.clone();
            results[0].push(
                drive(hits, concurrency, body_bytes, spread, move || {
                    let mut service = origin.clone();
                    async move {
                        let response = service.call(request()).await.expect("static");
                        body_of(response).await
                    }
                })
                .await,
            );
        }
        if wanted(names[1]) {
            let client = client.clone();
            results[1].push(
                drive(hits, concurrency, body_bytes, spread, move || {
                    let client = client.clone();
                    async move {
                        let _request = request();
                        let bytes: Option<Bytes> = client.get("hw:42").await.expect("get");
                        let response = json(bytes.expect("present"));
                        body_of(response).await
                    }
                })
                .await,
            );
        }
        for (i, service) in [(2, &tca_redis), (3, &tca_memory)] {
            if !wanted(names[i]) {
                continue;
            }
            let service = service.clone();
            results[i].push(
                drive(hits, concurrency, body_bytes, spread, move || {
                    let service = service.clone();
                    async move {
                        let response = service.oneshot(request()).await.expect("layer");
                        assert!(
                            response
                                .headers()
                                .get("cache-status")
                                .and_then(|v| v.to_str().ok())
                                .is_some_and(|v| v.contains("hit")),
                            "not a hit"
                        );
                        body_of(response).await
                    }
                })
                .await,
            );
        }
    }
    let runtime = if spread {
        format!("{workers} workers")
    } else {
        "one thread".to_owned()
    };
    println!("| path ({hits} hits of {body_bytes} B, {concurrency} at a time, {runtime}, median of 3) | app CPU µs/hit | allocations/hit |");
    println!("| --- | ---: | ---: |");
    for (name, figures) in names.iter().zip(results) {
        if figures.is_empty() {
            continue;
        }
        let cpu = median(figures.iter().map(|f| f.cpu_ns_per_hit / 1000.0).collect());
        let allocs = median(figures.iter().map(|f| f.allocs_per_hit).collect());
        println!("| {name} | {cpu:.2} | {allocs:.1} |");
    }
    let _ = client.quit().await;
}
