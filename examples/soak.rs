//! A bounded soak run: mixed traffic through [`CacheAsideLayer`] over a
//! Redis that is killed and restarted every few seconds, checking that
//! every response is one the origin produced.
//!
//! ```sh
//! cargo run --release --example soak
//! ```
//!
//! It starts its own `redis-server` (which must be on `PATH`) on a free
//! loopback port, and sends nothing anywhere else: the requests go straight
//! through the service with `ServiceExt::oneshot`, no sockets.
//!
//! - Origin: a `service_fn` with 5 ms of latency serving `/items/{0..2000}`
//!   (bodies of 200 B to 16 KiB, four of them over the 1 MiB cap) and
//!   `/index`; `PUT` bumps an item.
//! - Layer: `RedisStore::connect_lazy`, TTLs of 1 to 3 s,
//!   stale-while-revalidate 2 s, purge rules (`PUT /items/{id}` purges the
//!   item and `/index`; `PUT /bulk/reindex` purges the glob `/items/1*`).
//! - Traffic: 16 tasks; 80% GET over the items with a Zipf-like skew (and
//!   `/index`), 15% PUT, 5% HEAD.
//! - Faults: every `SOAK_RESTART_SECS` (10) the server is killed, left down
//!   for a second, and started again, empty, on the same port.
//!
//! Bounds: `SOAK_SECS` (default 60) and `SOAK_MAX_REQUESTS` (default
//! 5,000,000), whichever comes first. `SOAK_PUT_PERCENT` (default 15)
//! changes the share of writes (HEAD stays at 5%).
//!
//! At the end it prints a table and a JSON line (stdout): requests, errors,
//! hit ratio, `Cache-Status` kinds, Redis restarts and, for each, how long
//! after Redis was back requests still bypassed the store
//! (`detail=store-unavailable`: the circuit breaker still open), latency,
//! and the RSS of the process at the start, at the end and at its peak
//! (`VmHWM`). An error is a response the origin did not produce: a status
//! other than the origin's 2xx, another path's headers or body, a wrong
//! length, a request that fails, hangs (10 s) or panics. The exit status is
//! non-zero when there is any.

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::env;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_cache_aside::http::ResponseBody;
use tower_cache_aside::{CacheAsideLayer, RedisStore, Route};

use redis_server::RedisServer;

const TASKS: usize = 16;
const ITEMS: usize = 2000;
const ORIGIN_LATENCY: Duration = Duration::from_millis(5);
/// A request that takes longer than this is counted as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Redis stays down at each restart.
const DOWNTIME: Duration = Duration::from_secs(1);
/// Bodies over the layer's default cap (1 MiB): these items.
const OVERSIZE_LEN: usize = 1024 * 1024 + 64 * 1024;
const MIN_LEN: usize = 200;
const MAX_LEN: usize = 16 * 1024;
/// Zipf exponent of the item popularity.
const ZIPF_S: f64 = 1.0;
const HOST: &str = "soak.test";
/// The header the origin marks every response with: the path it answered.
const ORIGIN_PATH: &str = "x-soak-path";
/// Latency histogram: 10 µs buckets up to 200 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

type Service = BoxCloneService<Request<Bytes>, Response<ResponseBody<Full<Bytes>>>, Infallible>;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr (stdout is for the report); quiet unless asked.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    match run().await {
        Ok(report) if report.errors == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

async fn run() -> Result<Report, Box<dyn std::error::Error>> {
    let secs = env_u64("SOAK_SECS", 60)?;
    let max_requests = env_u64("SOAK_MAX_REQUESTS", 5_000_000)?;
    let restart_every = Duration::from_secs(env_u64("SOAK_RESTART_SECS", 10)?.max(2));
    let put_percent = u32::try_from(env_u64("SOAK_PUT_PERCENT", 15)?.min(95))?;

    let server = tokio::task::spawn_blocking(|| Arc::new(RedisServer::launch())).await?;
    eprintln!(
        "soak: redis-server on 127.0.0.1:{}, {secs} s or {max_requests} requests, {TASKS} tasks",
        server.port()
    );

    let origin = Arc::new(Origin::new());
    let layer = CacheAsideLayer::builder(RedisStore::connect_lazy(&server.url())?)
        .prefix("soak:")
        .ttl(Duration::from_secs(3))
        .negative_ttl(Duration::from_secs(1))
        .route("/index", Route::new().ttl(Duration::from_secs(1)))
        .stale_while_revalidate(Duration::from_secs(2))
        .purge_on(Method::PUT, "/items/{id}", ["/items/{id}", "/index"])
        .purge_on(Method::PUT, "/bulk/reindex", ["/items/1*"])
        .build()?;
    let service: Service =
        BoxCloneService::new(ServiceBuilder::new().layer(layer).service(service_fn({
            let origin = origin.clone();
            move |request: Request<Bytes>| {
                let origin = origin.clone();
                async move { Ok::<_, Infallible>(origin.answer(request).await) }
            }
        })));
    let plan = Arc::new(Plan::new(put_percent));

    let rss_start = memory();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let issued = Arc::new(AtomicU64::new(0));
    let timeline = Arc::new(Timeline::new(started, Duration::from_secs(secs + 30)));

    let supervisor = tokio::spawn(supervise(server.clone(), started, deadline, restart_every));
    let progress = tokio::spawn(progress(issued.clone(), deadline));
    let workers: Vec<_> = (0..TASKS)
        .map(|_| {
            tokio::spawn(worker(
                service.clone(),
                origin.clone(),
                plan.clone(),
                timeline.clone(),
                issued.clone(),
                max_requests,
                deadline,
            ))
        })
        .collect();

    let mut stats = Stats::new();
    for worker in workers {
        match worker.await {
            Ok(worker_stats) => stats.merge(worker_stats),
            Err(error) => stats.error(format!("a worker task failed: {error}")),
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    let restarts = match supervisor.await {
        Ok(Ok(restarts)) => restarts,
        Ok(Err(restarts)) => {
            eprintln!("soak: the supervisor could not restart redis-server");
            restarts
        }
        Err(error) => {
            eprintln!("soak: the supervisor failed: {error}");
            Vec::new()
        }
    };
    let recovery = timeline.recovery(&restarts, elapsed);
    let rss_end = memory();
    let report = Report::new(&stats, elapsed, &recovery, rss_start, rss_end);
    report.print(&stats);
    // Stops the child; `process::exit` would leave it running.
    drop(service);
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// One kill and restart of the server, as times since the soak started.
#[derive(Debug, Clone, Copy)]
struct Restart {
    /// When the server was killed.
    down: Duration,
    /// When it accepted connections again.
    up: Duration,
}

/// Kills and restarts the server every `every` until `deadline`; the
/// restarts (`Err` when a restart failed, which ends them).
async fn supervise(
    server: Arc<RedisServer>,
    started: Instant,
    deadline: Instant,
    every: Duration,
) -> Result<Vec<Restart>, Vec<Restart>> {
    let mut restarts = Vec::new();
    loop {
        let next = Instant::now() + every;
        // No restart that would still be under way at the deadline.
        if next + DOWNTIME + Duration::from_secs(1) > deadline {
            return Ok(restarts);
        }
        tokio::time::sleep_until(next.into()).await;
        let down = started.elapsed();
        let stopping = server.clone();
        if tokio::task::spawn_blocking(move || stopping.stop())
            .await
            .is_err()
        {
            return Err(restarts);
        }
        tokio::time::sleep(DOWNTIME).await;
        let starting = server.clone();
        // `start` panics when the port was taken meanwhile.
        if tokio::task::spawn_blocking(move || starting.start())
            .await
            .is_err()
        {
            return Err(restarts);
        }
        restarts.push(Restart {
            down,
            up: started.elapsed(),
        });
        eprintln!("soak: redis-server restarted ({})", restarts.len());
    }
}

async fn progress(issued: Arc<AtomicU64>, deadline: Instant) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    while Instant::now() < deadline {
        tick.tick().await;
        eprintln!(
            "soak: {:>3} s, {} requests",
            started.elapsed().as_secs(),
            issued.load(Ordering::Relaxed)
        );
    }
}

// ---------------------------------------------------------------------------
// The origin
// ---------------------------------------------------------------------------

/// The application behind the cache: items with fixed bodies, a version
/// per item that `PUT` bumps, and an index.
struct Origin {
    bodies: Vec<Bytes>,
    index: Bytes,
    versions: Vec<AtomicU64>,
    calls: AtomicU64,
}

fn item_path(item: usize) -> String {
    format!("/items/{item}")
}

/// The body length of an item: 200 B to 16 KiB, spread by a hash, and four
/// items over the 1 MiB cap.
fn item_len(item: usize) -> usize {
    if item % 500 == 123 {
        return OVERSIZE_LEN;
    }
    let mut z = (item as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    MIN_LEN + (z % (MAX_LEN - MIN_LEN + 1) as u64) as usize
}

/// A body that names its path first, so that a mix-up shows.
fn body_for(path: &str, len: usize) -> Bytes {
    let mut body = format!("path={path}\n").into_bytes();
    body.resize(len, b'.');
    Bytes::from(body)
}

impl Origin {
    fn new() -> Origin {
        Origin {
            bodies: (0..ITEMS)
                .map(|i| body_for(&item_path(i), item_len(i)))
                .collect(),
            index: body_for("/index", 1024),
            versions: (0..ITEMS).map(|_| AtomicU64::new(0)).collect(),
            calls: AtomicU64::new(0),
        }
    }

    async fn answer(&self, request: Request<Bytes>) -> Response<Full<Bytes>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(ORIGIN_LATENCY).await;
        let path = request.uri().path();
        let (status, body) = match (request.method(), path) {
            (&Method::PUT, "/bulk/reindex") => (StatusCode::OK, Bytes::from_static(b"ok")),
            (&Method::PUT, _) => match item_of(path) {
                Some(item) => {
                    self.versions[item].fetch_add(1, Ordering::Relaxed);
                    (StatusCode::OK, Bytes::from_static(b"ok"))
                }
                None => (StatusCode::NOT_FOUND, Bytes::new()),
            },
            (_, "/index") => (StatusCode::OK, self.index.clone()),
            (_, _) => match item_of(path) {
                Some(item) => (StatusCode::OK, self.bodies[item].clone()),
                None => (StatusCode::NOT_FOUND, Bytes::new()),
            },
        };
        let length = body.len();
        let body = if request.method() == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(value) = HeaderValue::from_str(path) {
            headers.insert(ORIGIN_PATH, value);
        }
        response
    }

    /// The body length a GET of `path` must get.
    fn expected_len(&self, path: &str) -> Option<usize> {
        if path == "/index" {
            return Some(self.index.len());
        }
        item_of(path).map(|item| self.bodies[item].len())
    }
}

fn item_of(path: &str) -> Option<usize> {
    path.strip_prefix("/items/")?
        .parse()
        .ok()
        .filter(|i| *i < ITEMS)
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// Item popularity: a Zipf-like distribution over ranks, ranks spread over
/// the items so that the hot ones are not neighbours.
struct Plan {
    cdf: Vec<f64>,
    put_percent: u32,
}

impl Plan {
    fn new(put_percent: u32) -> Plan {
        let mut total = 0.0;
        let cdf = (1..=ITEMS)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(ZIPF_S);
                total
            })
            .collect();
        Plan { cdf, put_percent }
    }

    fn item(&self) -> usize {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let x = fastrand::f64() * total;
        let rank = self.cdf.partition_point(|&c| c < x).min(ITEMS - 1);
        // 7919 is prime, so this permutes 0..ITEMS.
        (rank * 7919 + 17) % ITEMS
    }

    /// 80% GET (one in twenty of them the index), 15% PUT (one in a
    /// hundred of them the bulk reindex), 5% HEAD; with another share of
    /// PUT, GET takes the rest.
    fn next(&self) -> (Method, String) {
        let roll = fastrand::u32(..100);
        if roll < 95 - self.put_percent {
            if fastrand::u32(..20) == 0 {
                (Method::GET, "/index".to_owned())
            } else {
                (Method::GET, item_path(self.item()))
            }
        } else if roll < 95 {
            if fastrand::u32(..100) == 0 {
                (Method::PUT, "/bulk/reindex".to_owned())
            } else {
                (Method::PUT, item_path(self.item()))
            }
        } else {
            (Method::HEAD, item_path(self.item()))
        }
    }
}

async fn worker(
    service: Service,
    origin: Arc<Origin>,
    plan: Arc<Plan>,
    timeline: Arc<Timeline>,
    issued: Arc<AtomicU64>,
    max_requests: u64,
    deadline: Instant,
) -> Stats {
    let mut stats = Stats::new();
    while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
        let (method, path) = plan.next();
        let body = if method == Method::PUT {
            Bytes::from_static(b"{\"bump\":1}")
        } else {
            Bytes::new()
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header(header::HOST, HOST)
            .body(body);
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                stats.error(format!(
                    "{method} {path}: cannot build the request: {error}"
                ));
                continue;
            }
        };
        let sent = Instant::now();
        let service = service.clone();
        let exchange = async move {
            let response = service.oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Infallible>((parts, body))
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        stats.latency(sent.elapsed());
        stats.count(&method);
        let (parts, body) = match result {
            Ok(Ok(exchange)) => exchange,
            Ok(Err(never)) => match never {},
            Err(_) => {
                stats.error(format!("{method} {path}: no answer in {REQUEST_TIMEOUT:?}"));
                continue;
            }
        };
        match check(&origin, &method, &path, &parts, &body) {
            Ok(kind) => {
                if method != Method::PUT {
                    stats.lookups += 1;
                    if kind.starts_with("hit") {
                        stats.hits += 1;
                    }
                }
                if body.len() > MAX_LEN && method == Method::GET && path != "/index" {
                    stats.oversize += 1;
                }
                if kind == "fwd=bypass; detail=store-unavailable" {
                    timeline.bypassed(sent);
                }
                *stats.kinds.entry(kind).or_default() += 1;
            }
            Err(problem) => stats.error(format!("{method} {path}: {problem}")),
        }
    }
    stats
}

/// Checks that a response is the origin's answer to `method path`; returns
/// the layer's `Cache-Status` kind.
fn check(
    origin: &Origin,
    method: &Method,
    path: &str,
    parts: &http::response::Parts,
    body: &Bytes,
) -> Result<String, String> {
    if !parts.status.is_success() {
        return Err(format!("status {} from a 2xx origin", parts.status));
    }
    let marked = parts.headers.get(ORIGIN_PATH).map(HeaderValue::as_bytes);
    if marked != Some(path.as_bytes()) {
        return Err(format!("answered with the headers of {marked:?}"));
    }
    let cache_status = parts
        .headers
        .get_all("cache-status")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .ok_or("no cache-status")?;
    let kind =
        cache_status_kind(cache_status).ok_or_else(|| format!("cache-status {cache_status:?}"))?;
    if *method == Method::PUT {
        return if body.as_ref() == b"ok" {
            Ok(kind)
        } else {
            Err("a PUT answered with another body".into())
        };
    }
    let want = origin.expected_len(path).ok_or("no such path")?;
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length != Some(want) {
        return Err(format!("content-length {length:?}, want {want}"));
    }
    if *method == Method::HEAD {
        return if body.is_empty() {
            Ok(kind)
        } else {
            Err("a HEAD answered with a body".into())
        };
    }
    if body.len() != want {
        return Err(format!("a body of {} bytes, want {want}", body.len()));
    }
    if !body.starts_with(format!("path={path}\n").as_bytes()) {
        return Err("the body of another path".into());
    }
    Ok(kind)
}

/// The layer's member without its numbers: `tower-cache-aside; hit; ttl=3;
/// collapsed` → `hit; collapsed`, `…; fwd=method; purged=2` →
/// `fwd=method; purged`.
fn cache_status_kind(value: &str) -> Option<String> {
    let rest = value.strip_prefix("tower-cache-aside; ")?;
    let kept: Vec<&str> = rest
        .split("; ")
        .filter(|p| !p.starts_with("ttl="))
        .map(|p| {
            if p.starts_with("purged=") {
                "purged"
            } else {
                p
            }
        })
        .collect();
    Some(kept.join("; "))
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

/// Requests that bypassed the store because it was unavailable, in
/// 100 ms slots since the start.
struct Timeline {
    started: Instant,
    slots: Vec<AtomicU64>,
}

const SLOT: Duration = Duration::from_millis(100);

impl Timeline {
    fn new(started: Instant, span: Duration) -> Timeline {
        let slots = (span.as_millis() / SLOT.as_millis()) as usize + 1;
        Timeline {
            started,
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, at: Duration) -> usize {
        ((at.as_millis() / SLOT.as_millis()) as usize).min(self.slots.len() - 1)
    }

    fn bypassed(&self, sent: Instant) {
        let slot = self.slot(sent.saturating_duration_since(self.started));
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// For each restart: how long after the server was back requests still
    /// bypassed the store (up to the next restart or the end), to 100 ms.
    fn recovery(&self, restarts: &[Restart], end: Duration) -> Vec<(Restart, Duration)> {
        restarts
            .iter()
            .enumerate()
            .map(|(i, restart)| {
                let until = restarts.get(i + 1).map_or(end, |next| next.down);
                let (from, to) = (self.slot(restart.up), self.slot(until));
                let last = (from..to)
                    .rev()
                    .find(|&s| self.slots[s].load(Ordering::Relaxed) > 0);
                let recovered = last.map_or(Duration::ZERO, |s| {
                    (SLOT * (s as u32 + 1)).saturating_sub(restart.up)
                });
                (*restart, recovered)
            })
            .collect()
    }
}

struct Stats {
    requests: u64,
    by_method: BTreeMap<String, u64>,
    /// GET and HEAD requests, and those served from the cache.
    lookups: u64,
    hits: u64,
    /// GETs of bodies over the cap.
    oversize: u64,
    kinds: BTreeMap<String, u64>,
    errors: u64,
    /// The first few errors, for the log.
    samples: Vec<String>,
    histogram: Vec<u64>,
    max_latency: Duration,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            requests: 0,
            by_method: BTreeMap::new(),
            lookups: 0,
            hits: 0,
            oversize: 0,
            kinds: BTreeMap::new(),
            errors: 0,
            samples: Vec::new(),
            histogram: vec![0; BUCKETS + 1],
            max_latency: Duration::ZERO,
        }
    }

    fn count(&mut self, method: &Method) {
        self.requests += 1;
        *self.by_method.entry(method.to_string()).or_default() += 1;
    }

    fn latency(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(us / BUCKET_US)
            .unwrap_or(BUCKETS)
            .min(BUCKETS);
        self.histogram[bucket] += 1;
        self.max_latency = self.max_latency.max(took);
    }

    fn error(&mut self, problem: String) {
        self.errors += 1;
        if self.samples.len() < 20 {
            eprintln!("soak: error: {problem}");
            self.samples.push(problem);
        }
    }

    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        for (method, n) in other.by_method {
            *self.by_method.entry(method).or_default() += n;
        }
        self.lookups += other.lookups;
        self.hits += other.hits;
        self.oversize += other.oversize;
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
        self.errors += other.errors;
        self.samples.extend(other.samples);
        for (mine, theirs) in self.histogram.iter_mut().zip(other.histogram) {
            *mine += theirs;
        }
        self.max_latency = self.max_latency.max(other.max_latency);
    }

    /// The latency under which a fraction `q` of the requests finished,
    /// in µs (bucket upper bound).
    fn quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.histogram.iter().sum();
        let target = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (bucket, n) in self.histogram.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return (bucket as u64 + 1) * BUCKET_US;
            }
        }
        (BUCKETS as u64) * BUCKET_US
    }
}

/// `VmRSS` and `VmHWM` of this process, in KiB (Linux).
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss_kib: Option<u64>,
    peak_kib: Option<u64>,
}

fn memory() -> Memory {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Memory::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

struct Report {
    errors: u64,
    json: serde_json::Value,
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

impl Report {
    fn new(
        stats: &Stats,
        elapsed: Duration,
        recovery: &[(Restart, Duration)],
        start: Memory,
        end: Memory,
    ) -> Report {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let hit_ratio = if stats.lookups == 0 {
            0.0
        } else {
            stats.hits as f64 / stats.lookups as f64
        };
        let json = serde_json::json!({
            "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "tasks": TASKS,
            "keys": ITEMS,
            "requests": stats.requests,
            "requests_per_second": (stats.requests as f64 / elapsed.as_secs_f64()).round(),
            "by_method": stats.by_method,
            "errors": stats.errors,
            "hit_ratio": (hit_ratio * 1000.0).round() / 1000.0,
            "cache_status": stats.kinds,
            "oversize_gets": stats.oversize,
            "redis_restarts": recovery.len(),
            "restarts": recovery.iter().map(|(restart, recovered)| serde_json::json!({
                "down_at_ms": ms(restart.down),
                "up_at_ms": ms(restart.up),
                "store_bypassed_after_up_ms": ms(*recovered),
            })).collect::<Vec<_>>(),
            "latency_us": {
                "p50": stats.quantile_us(0.50),
                "p99": stats.quantile_us(0.99),
                "max": u64::try_from(stats.max_latency.as_micros()).unwrap_or(u64::MAX),
            },
            "rss_kib": {
                "start": start.rss_kib,
                "end": end.rss_kib,
                "peak": end.peak_kib,
            },
        });
        Report {
            errors: stats.errors,
            json,
        }
    }

    fn print(&self, stats: &Stats) {
        let j = &self.json;
        let by_method: Vec<String> = stats
            .by_method
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        println!("| measure | value |");
        println!("| --- | ---: |");
        println!("| duration | {} s |", j["seconds"]);
        println!(
            "| requests | {} ({}) |",
            stats.requests,
            by_method.join(", ")
        );
        println!("| requests per second | {} |", j["requests_per_second"]);
        println!("| errors | {} |", stats.errors);
        println!(
            "| hit ratio (GET + HEAD) | {:.1}% |",
            j["hit_ratio"].as_f64().unwrap_or(0.0) * 100.0
        );
        println!("| Redis restarts | {} |", j["redis_restarts"]);
        let bypassed: Vec<String> = j["restarts"]
            .as_array()
            .map(|restarts| {
                restarts
                    .iter()
                    .map(|r| {
                        let ms = r["store_bypassed_after_up_ms"].as_u64().unwrap_or(0);
                        format!("{:.1}", ms as f64 / 1000.0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "| store bypassed after Redis was back, per restart | {} s |",
            bypassed.join(" / ")
        );
        println!(
            "| latency p50 / p99 / max | {} / {} / {} µs |",
            j["latency_us"]["p50"], j["latency_us"]["p99"], j["latency_us"]["max"]
        );
        println!(
            "| RSS start / end / peak | {} / {} / {} |",
            mib(j["rss_kib"]["start"].as_u64()),
            mib(j["rss_kib"]["end"].as_u64()),
            mib(j["rss_kib"]["peak"].as_u64())
        );
        println!();
        println!("| Cache-Status | count |");
        println!("| --- | ---: |");
        for (kind, n) in &stats.kinds {
            println!("| `{kind}` | {n} |");
        }
        println!();
        println!("{}", self.json);
    }
}
