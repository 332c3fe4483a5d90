//! The contenders: one axum app, the same routes and handlers, served six
//! ways, each on its own loopback listener.
//!
//! All six servers of a [`Servers`] run on one Tokio runtime of their own:
//! a single-threaded one on a thread of its own (the "server thread"), or
//! the multi-threaded one `#[tokio::main]` makes, one worker per core. The
//! load generator runs on another thread (the "client thread"), and
//! `redis-server` is a separate process. Only one contender is driven at a
//! time, so the idle ones cost nothing, and every contender gets the same
//! server threads.
//!
//! Routes (same in every contender):
//!
//! - `GET /s/{id}`: a ~200 B JSON body, after 100 ms of simulated database
//!   latency when the handler is the origin;
//! - `GET /l/{id}`: the same with a 16 KiB JSON body;
//! - `GET /z/{id}`: the ~200 B body with no simulated latency (for the
//!   miss cost: tokio's timer has 1 ms granularity, which would drown a
//!   difference of some microseconds);
//! - `GET /warm`: 50 ms, `Cache-Control: no-store`; used to open many
//!   keep-alive connections before a burst; excluded from the caches.
//!
//! Each Redis contender also has a probe copy (same router, own Redis
//! connection, own listener) with an outermost layer that records when
//! each request arrived and when its response body ended; only the
//! `MONITOR` pass of the miss phase uses them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{BoxError, Router};
use bytes::Bytes;
use fred::clients::Client as FredClient;
use fred::interfaces::{ClientLike, KeysInterface};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_cache_aside::{CacheAsideLayer, MemoryStore, RedisStore};

/// Simulated database latency of the origin.
pub const ORIGIN_DELAY: Duration = Duration::from_millis(100);
/// TTL of every cache contender: longer than any run, so nothing expires
/// while it is measured.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Keys `0..KEYS` have prepared bodies (and hand-written Redis keys).
pub const KEYS: usize = 1000;
pub const SMALL_BYTES: usize = 200;
pub const LARGE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contender {
    Static,
    HandWritten,
    TcaRedis,
    TcaMemory,
    ThcRedis,
    Origin,
}

impl Contender {
    pub const ALL: [Contender; 6] = [
        Contender::Static,
        Contender::HandWritten,
        Contender::TcaRedis,
        Contender::TcaMemory,
        Contender::ThcRedis,
        Contender::Origin,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Contender::Static => "static",
            Contender::HandWritten => "hand-written",
            Contender::TcaRedis => "tca-redis",
            Contender::TcaMemory => "tca-memory",
            Contender::ThcRedis => "tower-http-cache",
            Contender::Origin => "origin",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Contender::Static => "static (no cache)",
            Contender::HandWritten => "hand-written fred GET",
            Contender::TcaRedis => "tower-cache-aside, Redis",
            Contender::TcaMemory => "tower-cache-aside, MemoryStore",
            Contender::ThcRedis => "tower-http-cache 0.6, Redis",
            Contender::Origin => "origin alone (100 ms DB)",
        }
    }

    /// Whether its answers come from a cache in front of the origin.
    pub fn is_cache(self) -> bool {
        matches!(
            self,
            Contender::TcaRedis | Contender::TcaMemory | Contender::ThcRedis
        )
    }

    /// Whether it talks to Redis on the request path.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Contender::HandWritten | Contender::TcaRedis | Contender::ThcRedis
        )
    }

    /// Whether its responses carry tower-cache-aside's `Cache-Status`.
    pub fn has_cache_status(self) -> bool {
        matches!(self, Contender::TcaRedis | Contender::TcaMemory)
    }
}

/// Body size of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub fn bytes(self) -> usize {
        match self {
            Size::Small => SMALL_BYTES,
            Size::Large => LARGE_BYTES,
        }
    }

    /// The route prefix (`/s/{id}`, `/l/{id}`) and hand-written key tag.
    pub fn tag(self) -> &'static str {
        match self {
            Size::Small => "s",
            Size::Large => "l",
        }
    }
}

/// The JSON body of item `id`, exactly `size` bytes.
pub fn make_body(size: usize, id: &str) -> Bytes {
    let mut body = format!(
        r#"{{"id":"{id}","name":"item {id}","price_cents":1999,"tags":["bench","cache"],"data":""#
    );
    let tail = "\"}";
    while body.len() + tail.len() < size {
        body.push('x');
    }
    body.push_str(tail);
    Bytes::from(body)
}

/// Prepared bodies of keys `0..KEYS`, both sizes.
#[derive(Debug)]
pub struct Bodies {
    small: Vec<Bytes>,
    large: Vec<Bytes>,
}

impl Bodies {
    pub fn new() -> Bodies {
        let make = |size| (0..KEYS).map(|i| make_body(size, &i.to_string())).collect();
        Bodies {
            small: make(SMALL_BYTES),
            large: make(LARGE_BYTES),
        }
    }

    pub fn get(&self, size: Size, id: &str) -> Bytes {
        let prepared = match size {
            Size::Small => &self.small,
            Size::Large => &self.large,
        };
        match id.parse::<usize>() {
            Ok(i) if i < prepared.len() => prepared[i].clone(),
            _ => make_body(size.bytes(), id),
        }
    }

    /// The Redis key the hand-written handler reads for `id`.
    pub fn hand_written_key(size: Size, id: &str) -> String {
        format!("hw:{}:{id}", size.tag())
    }

    /// Every prepared (hand-written key, body) pair.
    pub fn hand_written_pairs(&self) -> Vec<(String, Bytes)> {
        let mut pairs = Vec::with_capacity(2 * KEYS);
        for size in [Size::Small, Size::Large] {
            for i in 0..KEYS {
                let id = i.to_string();
                pairs.push((Self::hand_written_key(size, &id), self.get(size, &id)));
            }
        }
        pairs
    }
}

#[derive(Debug, Clone, Copy)]
enum Handler {
    /// Answers from memory.
    Static,
    /// One fred GET of a prepared key.
    HandWritten,
    /// The simulated database (counts its calls).
    Origin,
}

#[derive(Clone)]
struct AppState {
    handler: Handler,
    bodies: Arc<Bodies>,
    origin_calls: Arc<AtomicU64>,
    redis: Option<FredClient>,
}

impl AppState {
    async fn answer(&self, size: Size, id: &str, delay: Duration) -> Response {
        match self.handler {
            Handler::Static => json(self.bodies.get(size, id)),
            Handler::HandWritten => {
                let Some(redis) = &self.redis else {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                let key = Bodies::hand_written_key(size, id);
                match redis.get::<Option<Bytes>, _>(key).await {
                    Ok(Some(body)) => json(body),
                    Ok(None) => StatusCode::NOT_FOUND.into_response(),
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
            Handler::Origin => {
                self.origin_calls.fetch_add(1, Ordering::Relaxed);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                json(self.bodies.get(size, id))
            }
        }
    }
}

fn json(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn small(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    state.answer(Size::Small, &id, ORIGIN_DELAY).await
}

async fn large(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    state.answer(Size::Large, &id, ORIGIN_DELAY).await
}

async fn zero_delay(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    state.answer(Size::Small, &id, Duration::ZERO).await
}

async fn warm() -> Response {
    tokio::time::sleep(Duration::from_millis(50)).await;
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        "ok",
    )
        .into_response()
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/s/{id}", get(small))
        .route("/l/{id}", get(large))
        .route("/z/{id}", get(zero_delay))
        .route("/warm", get(warm))
        .with_state(state)
}

/// axum's `Body` is not `Sync`, and tower-http-cache requires its inner
/// service's body to be. A `Mutex` makes it `Sync` without a lock on the
/// data path (`poll_frame` has `&mut self`: `Mutex::get_mut`).
struct SyncBody(Mutex<axum::body::Body>);

impl SyncBody {
    fn new(body: axum::body::Body) -> SyncBody {
        SyncBody(Mutex::new(body))
    }
}

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let body = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

async fn thc_error(error: BoxError) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// When each request reached a server and when its response body ended,
/// in seconds since the Unix epoch (the clock of `MONITOR`'s timestamps).
#[derive(Debug, Clone, Default)]
pub struct Spans(Arc<Mutex<Vec<(f64, f64)>>>);

impl Spans {
    /// Takes the spans recorded so far.
    pub fn take(&self) -> Vec<(f64, f64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, span: (f64, f64)) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A response body that records its request's span when it ends (its last
/// frame is handed out, or it is dropped). Anything the layers inside
/// start when the body ends (a cache fill) starts after the end recorded.
struct SpanBody {
    inner: axum::body::Body,
    start: f64,
    spans: Option<Spans>,
}

impl SpanBody {
    fn end(&mut self) {
        if let Some(spans) = self.spans.take() {
            spans.push((self.start, unix_now()));
        }
    }
}

impl Drop for SpanBody {
    fn drop(&mut self) {
        self.end();
    }
}

impl http_body::Body for SpanBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.end();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of a Redis contender with an outermost layer that records
/// request spans: only for counting which Redis commands a request waits
/// for (the measured contenders carry no such layer).
#[derive(Debug, Clone)]
pub struct Probe {
    pub contender: Contender,
    pub addr: SocketAddr,
    pub spans: Spans,
}

impl Probe {
    pub fn url(&self, path: &str) -> hyper::Uri {
        format!("http://{}{path}", self.addr)
            .parse()
            .expect("a valid URI")
    }
}

/// One running contender.
#[derive(Debug, Clone)]
pub struct Served {
    pub contender: Contender,
    pub addr: SocketAddr,
    /// Calls of its origin handler (0 for static and hand-written).
    pub origin_calls: Arc<AtomicU64>,
}

impl Served {
    pub fn url(&self, path: &str) -> hyper::Uri {
        format!("http://{}{path}", self.addr)
            .parse()
            .expect("a valid URI")
    }

    pub fn origin_calls(&self) -> u64 {
        self.origin_calls.load(Ordering::Relaxed)
    }
}

/// The runtime the servers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerRuntime {
    /// `Builder::new_current_thread`: one thread.
    CurrentThread,
    /// `Builder::new_multi_thread` with this many workers (what
    /// `#[tokio::main]` builds: one per core).
    MultiThread(usize),
}

impl ServerRuntime {
    /// The multi-threaded runtime `#[tokio::main]` would build here.
    pub fn multi() -> ServerRuntime {
        ServerRuntime::MultiThread(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn id(self) -> String {
        match self {
            ServerRuntime::CurrentThread => "st".to_owned(),
            ServerRuntime::MultiThread(n) => format!("mt{n}"),
        }
    }

    pub fn label(self) -> String {
        match self {
            ServerRuntime::CurrentThread => "single-threaded runtime".to_owned(),
            ServerRuntime::MultiThread(n) => format!("multi-threaded runtime, {n} workers"),
        }
    }
}

/// The server runtime's threads and its contenders.
pub struct Servers {
    pub runtime: ServerRuntime,
    pub served: Vec<Served>,
    pub probes: Vec<Probe>,
    /// `/proc/self/task/<tid>/schedstat` of every thread that runs the
    /// servers (the server thread, or the workers).
    pub schedstat: Arc<Mutex<Vec<PathBuf>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    /// Starts the server thread, connects the Redis clients and binds
    /// every contender's listener on `127.0.0.1:0`.
    pub fn start(
        redis_url: &str,
        bodies: Arc<Bodies>,
        kind: ServerRuntime,
    ) -> Result<Servers, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let redis_url = redis_url.to_owned();
        let schedstat = Arc::new(Mutex::new(Vec::new()));
        let threads = schedstat.clone();
        let thread = std::thread::Builder::new()
            .name("bench-servers".into())
            .spawn(move || {
                let record = move || {
                    if let Some(path) = crate::cpu::thread_schedstat() {
                        threads
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(path);
                    }
                };
                let runtime = match kind {
                    ServerRuntime::CurrentThread => {
                        record();
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                    }
                    // Every worker counts; the thread that blocks on the
                    // runtime only waits.
                    ServerRuntime::MultiThread(workers) => {
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(workers)
                            .thread_name("bench-server-worker")
                            .on_thread_start(record)
                            // Blocking-pool threads (a host name lookup)
                            // count too: kept alive, so that every thread
                            // recorded can still be read at a window's end.
                            .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
                            .enable_all()
                            .build()
                    }
                }
                .expect("the server runtime");
                runtime.block_on(async move {
                    match setup(&redis_url, bodies).await {
                        Ok((served, probes, redis)) => {
                            let _ = ready_tx.send(Ok((served, probes)));
                            let _ = stop_rx.await;
                            for client in redis {
                                let _ = client.quit().await;
                            }
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
                // Dropping the runtime ends every server task.
                drop(runtime);
            })
            .map_err(|e| format!("cannot start the server thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok((served, probes))) => Ok(Servers {
                runtime: kind,
                served,
                probes,
                schedstat,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the server thread ended before it was ready".into())
            }
        }
    }

    pub fn probe(&self, contender: Contender) -> Option<&Probe> {
        self.probes.iter().find(|p| p.contender == contender)
    }

    pub fn get(&self, contender: Contender) -> &Served {
        self.served
            .iter()
            .find(|s| s.contender == contender)
            .expect("every contender is served")
    }

    /// Stops every server and waits for the server thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The router of one contender.
async fn contender_router(
    contender: Contender,
    redis_url: &str,
    state: AppState,
    fred_clients: &mut Vec<FredClient>,
) -> Result<Router, String> {
    let origin = AppState {
        handler: Handler::Origin,
        ..state.clone()
    };
    Ok(match contender {
        Contender::Static => app(AppState {
            handler: Handler::Static,
            ..state
        }),
        Contender::HandWritten => {
            let client = crate::common::connect(redis_url).await?;
            fred_clients.push(client.clone());
            app(AppState {
                handler: Handler::HandWritten,
                redis: Some(client),
                ..state
            })
        }
        Contender::TcaRedis => {
            // The crate's own constructor: one fred client, its defaults.
            let store = RedisStore::connect(redis_url)
                .await
                .map_err(|e| format!("RedisStore::connect: {e}"))?;
            let layer = CacheAsideLayer::builder(store)
                .ttl(CACHE_TTL)
                .exclude("/warm")
                .build()
                .map_err(|e| e.to_string())?;
            app(origin).layer(layer)
        }
        Contender::TcaMemory => {
            let layer = CacheAsideLayer::builder(MemoryStore::new())
                .ttl(CACHE_TTL)
                .exclude("/warm")
                .build()
                .map_err(|e| e.to_string())?;
            app(origin).layer(layer)
        }
        Contender::ThcRedis => {
            // As its README shows: a redis-rs ConnectionManager (on redis
            // 1.x defaults), RedisBackend::new, the builder with only the
            // TTL set. Its service wants a `Sync` inner body and answers
            // errors as `BoxError`: `SyncBody` and axum's
            // `HandleErrorLayer` adapt it to an axum router.
            let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
            let manager = client
                .get_connection_manager()
                .await
                .map_err(|e| format!("redis-rs connection manager: {e}"))?;
            let layer = tower_http_cache::layer::CacheLayer::builder(
                tower_http_cache::backend::redis::RedisBackend::new(manager),
            )
            .ttl(CACHE_TTL)
            .build();
            app(origin).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(thc_error))
                    .layer(layer)
                    .map_response(|response: Response| response.map(SyncBody::new)),
            )
        }
        Contender::Origin => app(origin),
    })
}

/// Binds `127.0.0.1:0` and serves `router` there.
async fn serve(router: Router) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind a loopback port: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// Builds and serves every contender, and a span-recording probe copy of
/// each Redis contender; returns them and the fred clients to quit at the
/// end.
async fn setup(
    redis_url: &str,
    bodies: Arc<Bodies>,
) -> Result<(Vec<Served>, Vec<Probe>, Vec<FredClient>), String> {
    let mut served = Vec::new();
    let mut probes = Vec::new();
    let mut fred_clients = Vec::new();
    for contender in Contender::ALL {
        let origin_calls = Arc::new(AtomicU64::new(0));
        let state = AppState {
            handler: Handler::Origin,
            bodies: bodies.clone(),
            origin_calls: origin_calls.clone(),
            redis: None,
        };
        let router =
            contender_router(contender, redis_url, state.clone(), &mut fred_clients).await?;
        served.push(Served {
            contender,
            addr: serve(router).await?,
            origin_calls,
        });
        if contender.uses_redis() {
            let spans = Spans::default();
            let recorder = spans.clone();
            let probe = contender_router(
                contender,
                redis_url,
                AppState {
                    origin_calls: Arc::new(AtomicU64::new(0)),
                    ..state
                },
                &mut fred_clients,
            )
            .await?
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let spans = recorder.clone();
                    async move {
                        let start = unix_now();
                        let response = next.run(request).await;
                        response.map(|inner| {
                            axum::body::Body::new(SpanBody {
                                inner,
                                start,
                                spans: Some(spans),
                            })
                        })
                    }
                },
            ));
            probes.push(Probe {
                contender,
                addr: serve(probe).await?,
                spans,
            });
        }
    }
    Ok((served, probes, fred_clients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_their_sizes() {
        for id in ["0", "999", "cold-12", "m3-117"] {
            assert_eq!(make_body(SMALL_BYTES, id).len(), SMALL_BYTES);
            assert_eq!(make_body(LARGE_BYTES, id).len(), LARGE_BYTES);
            let parsed: serde_json::Value =
                serde_json::from_slice(&make_body(SMALL_BYTES, id)).expect("valid JSON");
            assert_eq!(parsed["id"], id);
        }
    }
}
