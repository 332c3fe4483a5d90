//! The classic cache-aside exercise on axum: a users API over a slow
//! database (100 ms per read, 50 ms per write), with [`CacheAsideLayer`]
//! caching its GET and HEAD responses in Redis.
//!
//! ```sh
//! cargo run --example users
//! ```
//!
//! - `ADDR`: where to listen (default `127.0.0.1:3000`).
//! - `REDIS_URL`: the Redis to cache in (default `redis://127.0.0.1:6379`).
//!   When `REDIS_URL` is unset and no Redis answers at the default, the
//!   example caches in process ([`MemoryStore`]) and says so in its log.
//!   When `REDIS_URL` is set and Redis does not answer, the example starts
//!   anyway: requests pass through uncached until Redis answers, then they
//!   are cached in it. A password Redis refuses is an error at start-up.
//!   `redis://user:password@host:port` logs in as an ACL user.
//! - `RUST_LOG`: log filter (default `info,tower_cache_aside=debug`).
//!
//! A session (the second read is served from the cache: no database read,
//! a few milliseconds instead of 100):
//!
//! ```text
//! $ curl -i localhost:3000/users/1
//! HTTP/1.1 200 OK
//! content-type: application/json
//! cache-status: tower-cache-aside; fwd=miss; stored
//! content-length: 51
//!
//! {"id":1,"name":"Alice","email":"alice@example.com"}
//! $ curl -i localhost:3000/users/1
//! HTTP/1.1 200 OK
//! content-type: application/json
//! content-length: 51
//! age: 0
//! cache-status: tower-cache-aside; hit; ttl=4
//!
//! {"id":1,"name":"Alice","email":"alice@example.com"}
//! $ curl localhost:3000/stats
//! {"db_reads":1,"db_writes":0}
//! $ curl -si -X PUT -H 'content-type: application/json' -d '{"name":"Alicia"}' \
//!     localhost:3000/users/1 | grep cache-status
//! cache-status: tower-cache-aside; fwd=method; purged=1
//! $ curl -si localhost:3000/users/1 | grep cache-status   # purged by the PUT
//! cache-status: tower-cache-aside; fwd=miss; stored
//! ```
//!
//! Routes: `GET /users`, `POST /users` (`{"name":..,"email":..}`),
//! `GET`/`PUT`/`DELETE /users/{id}` (`PUT` merges `name` and/or `email`),
//! and `GET /stats` (database reads and writes so far; never cached).
//!
//! # Purging after writes
//!
//! A successful write purges what it made stale before its response goes
//! out (`cache-status: …; fwd=method; purged=N`), so a client reads its own
//! writes:
//!
//! - every write purges its own path: `PUT`/`DELETE /users/{id}` that user,
//!   `POST /users` the list;
//! - `POST /users` answers `Location: /users/{new id}`, which is purged too:
//!   a 404 cached before the user existed goes;
//! - the `purge_on` rules in `run` add the list to `PUT` and `DELETE`.
//!
//! A read that started before a write can still store the old answer just
//! after the purge; the short TTL of the user routes (5 s) bounds how long
//! such an entry lives.

use std::collections::BTreeMap;
use std::env::{self, VarError};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_cache_aside::{CacheAsideLayer, MemoryStore, RedisStore, Route, Store};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Longest wait for Redis at start-up. `RedisStore::connect` gives up on a
/// connection after 2 s by itself; this also bounds name resolution.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const READ_LATENCY: Duration = Duration::from_millis(100);
const WRITE_LATENCY: Duration = Duration::from_millis(50);
/// Freshness of cached users and lists, and of cached 404s.
const USERS_TTL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_cache_aside=debug")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr = env::var("ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let caching = CacheAsideLayer::builder(open_store().await?)
        .prefix("users-example:")
        // One app under one name: `localhost` and `127.0.0.1` share entries.
        .include_authority(false)
        .route("/users", Route::new().ttl(USERS_TTL))
        .route(
            "/users/{id}",
            Route::new().ttl(USERS_TTL).negative_ttl(USERS_TTL),
        )
        .exclude("/stats")
        // A write purges its own path and its `Location` by default; the
        // rules say the rest (the list), and name the user's path as well
        // so that they read as the whole story.
        .purge_on(Method::PUT, "/users/{id}", ["/users/{id}", "/users"])
        .purge_on(Method::DELETE, "/users/{id}", ["/users/{id}", "/users"])
        // POST answers `Location: /users/{new id}`: a 404 cached for that
        // user before it existed goes with the list.
        .purge_on(Method::POST, "/users", ["/users"])
        .build()?;

    let app = Router::new()
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/stats", get(stats))
        // Layers added later wrap those added earlier: the log sees the
        // `cache-status` the caching layer set.
        .layer(caching)
        .layer(middleware::from_fn(log_request))
        .with_state(Arc::new(Db::seeded()));

    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // If the signal handler cannot be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await?;
    Ok(())
}

/// Redis at `$REDIS_URL`, else Redis at the default URL, else an in-process
/// store.
async fn open_store() -> Result<Arc<dyn Store>, String> {
    let (url, required) = match env::var("REDIS_URL") {
        Ok(url) => (url, true),
        Err(VarError::NotPresent) => (DEFAULT_REDIS_URL.to_owned(), false),
        Err(error @ VarError::NotUnicode(_)) => return Err(format!("REDIS_URL: {error}")),
    };
    let shown = redact(&url);
    let failure = match tokio::time::timeout(CONNECT_TIMEOUT, RedisStore::connect(&url)).await {
        Ok(Ok(store)) => {
            info!("caching in Redis at {shown}");
            return Ok(Arc::new(store));
        }
        Ok(Err(tower_cache_aside::Error::Redis(error)))
            if *error.kind() == fred::error::ErrorKind::Auth =>
        {
            return Err(format!("Redis at {shown} refused the login: {error}"));
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer in {CONNECT_TIMEOUT:?}"),
    };
    if required {
        let store = RedisStore::connect_lazy(&url)
            .map_err(|error| format!("REDIS_URL {shown}: {error}"))?;
        warn!("Redis at {shown} does not answer yet ({failure}); requests pass through uncached, and are cached in it once it answers");
        return Ok(Arc::new(store));
    }
    warn!("no Redis at {shown} ({failure}); caching in process (MemoryStore) instead");
    Ok(Arc::new(MemoryStore::new()))
}

/// `url` without its user name and password, for logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// The HTTP API
// ---------------------------------------------------------------------------

async fn get_user(
    State(db): State<Arc<Db>>,
    Path(id): Path<u64>,
) -> Result<Json<User>, UserNotFound> {
    db.read(|t| t.users.get(&id).cloned())
        .await
        .map(Json)
        .ok_or(UserNotFound(id))
}

async fn list_users(State(db): State<Arc<Db>>) -> Json<Vec<User>> {
    Json(db.read(|t| t.users.values().cloned().collect()).await)
}

async fn create_user(State(db): State<Arc<Db>>, Json(new): Json<NewUser>) -> Response {
    let user = db
        .write(|t| {
            let user = User {
                id: t.next_id,
                name: new.name,
                email: new.email,
            };
            t.next_id += 1;
            t.users.insert(user.id, user.clone());
            user
        })
        .await;
    // The layer purges `/users` (this request's path) and `Location`.
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/users/{}", user.id))],
        Json(user),
    )
        .into_response()
}

async fn update_user(
    State(db): State<Arc<Db>>,
    Path(id): Path<u64>,
    Json(patch): Json<UserPatch>,
) -> Result<Json<User>, UserNotFound> {
    db.write(|t| {
        let user = t.users.get_mut(&id)?;
        if let Some(name) = patch.name {
            user.name = name;
        }
        if let Some(email) = patch.email {
            user.email = email;
        }
        Some(user.clone())
    })
    .await
    .map(Json)
    .ok_or(UserNotFound(id))
}

async fn delete_user(
    State(db): State<Arc<Db>>,
    Path(id): Path<u64>,
) -> Result<StatusCode, UserNotFound> {
    db.write(|t| t.users.remove(&id))
        .await
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or(UserNotFound(id))
}

async fn stats(State(db): State<Arc<Db>>) -> Json<Stats> {
    Json(Stats {
        db_reads: db.reads.load(Ordering::Relaxed),
        db_writes: db.writes.load(Ordering::Relaxed),
    })
}

/// Logs each request with what the cache did (`cache-status`).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    info!(
        %method,
        path,
        status = response.status().as_u16(),
        cache_status,
        elapsed = ?started.elapsed(),
        "request"
    );
    response
}

#[derive(Debug, Clone, Serialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct NewUser {
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct UserPatch {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Serialize)]
struct Stats {
    db_reads: u64,
    db_writes: u64,
}

/// `404 {"error":"user 9 not found"}`.
#[derive(Debug)]
struct UserNotFound(u64);

impl IntoResponse for UserNotFound {
    fn into_response(self) -> Response {
        let error = format!("user {} not found", self.0);
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------
// The simulated database
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Tables {
    users: BTreeMap<u64, User>,
    next_id: u64,
}

/// A map behind a lock, as slow as a remote database, counting its calls.
#[derive(Debug)]
struct Db {
    tables: Mutex<Tables>,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Db {
    fn seeded() -> Db {
        let users: BTreeMap<u64, User> = [(1, "Alice"), (2, "Bob")]
            .into_iter()
            .map(|(id, name)| {
                let email = format!("{}@example.com", name.to_lowercase());
                let name = name.to_owned();
                (id, User { id, name, email })
            })
            .collect();
        Db {
            tables: Mutex::new(Tables { users, next_id: 3 }),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// Runs a query, after the latency of a read.
    async fn read<T>(&self, query: impl FnOnce(&Tables) -> T) -> T {
        self.reads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(READ_LATENCY).await;
        query(&self.lock())
    }

    /// Applies a change, after the latency of a write.
    async fn write<T>(&self, change: impl FnOnce(&mut Tables) -> T) -> T {
        self.writes.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(WRITE_LATENCY).await;
        change(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }
}

/// A lock that a panicking handler cannot wedge.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
