//! The layer on an axum 0.8 `Router`, caching in a real Redis: driven with
//! `oneshot`, and once end to end over a loopback TCP socket with hyper's
//! client. Also the compile-time guarantees a server needs: the service is
//! `Clone` (and `Sync`), its future and body are `Send`.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tower::{Layer, Service};
use tower_cache_aside::http::{CacheAside, PurgePaths, ResponseBody};
use tower_cache_aside::{CacheAsideLayer, MemoryStore, RedisStore, Route};

use support::{
    assert_hit, bypass, send, shared_redis, CountingStore, RedisServer, Reply, TestBody, HOST,
    MISS, STORED,
};

/// A users API whose handlers count their reads.
#[derive(Clone)]
struct App {
    reads: Arc<AtomicUsize>,
    users: Arc<Mutex<HashMap<u32, String>>>,
}

impl App {
    fn new() -> App {
        App {
            reads: Arc::new(AtomicUsize::new(0)),
            users: Arc::new(Mutex::new(HashMap::from([
                (1, "Alice".to_owned()),
                (2, "Bob".to_owned()),
            ]))),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/users/{id}", get(get_user).put(put_user))
            .route("/members/{id}", get(get_user).put(put_member))
            .route("/session", get(session))
            .route("/stream", get(stream))
            .with_state(self.clone())
    }
}

fn user_json(id: u32, name: &str) -> String {
    format!(r#"{{"id":{id},"name":"{name}"}}"#)
}

async fn get_user(State(app): State<App>, Path(id): Path<u32>) -> Response {
    app.reads.fetch_add(1, Ordering::SeqCst);
    let name = app.users.lock().unwrap().get(&id).cloned();
    match name {
        Some(name) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::ETAG, "\"u1\""),
            ],
            user_json(id, &name),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such user").into_response(),
    }
}

async fn put_user(State(app): State<App>, Path(id): Path<u32>, name: String) -> StatusCode {
    app.users.lock().unwrap().insert(id, name);
    StatusCode::NO_CONTENT
}

/// Renames a user, and names the canonical spelling of the user's page as
/// stale: `/members/02` and `/members/2` are one user to `Path<u32>`.
async fn put_member(
    State(app): State<App>,
    Path(id): Path<u32>,
    name: String,
) -> impl IntoResponse {
    app.users.lock().unwrap().insert(id, name);
    (
        Extension(PurgePaths::new().path(format!("/members/{id}"))),
        StatusCode::NO_CONTENT,
    )
}

async fn session(State(app): State<App>) -> impl IntoResponse {
    app.reads.fetch_add(1, Ordering::SeqCst);
    ([(header::SET_COOKIE, "session=fresh")], "welcome")
}

/// A streamed body with no length, in three chunks, whose end shows only
/// as the end of the stream.
async fn stream(State(app): State<App>) -> Response {
    app.reads.fetch_add(1, Ordering::SeqCst);
    Response::new(Body::new(
        TestBody::chunks(["one,", "two,", "three"]).lazy_end(),
    ))
}

/// A layer over Redis (the shared test server) with a counting store.
async fn redis_layer(prefix: &str) -> (Arc<RedisServer>, Arc<CountingStore>, CacheAsideLayer) {
    let server = shared_redis();
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&server.url()).await.expect("connect"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix(prefix)
        .store_timeout(Duration::from_secs(5))
        .negative_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    (server, store, layer)
}

fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

fn get_req(path: &str) -> Request<Body> {
    req(Method::GET, path, &[])
}

fn put_req(path: &str, body: &'static str) -> Request<Body> {
    Request::put(path)
        .header("host", HOST)
        .body(Body::from(body))
        .unwrap()
}

/// The story of a user who renamed user 2 through `/users/%32` and kept
/// reading the old name from `/users/2`, both ways round, and with other
/// spellings of the id.
#[tokio::test]
async fn axum_a_write_through_any_spelling_purges_every_spelling() {
    let (_server, store, layer) = redis_layer("t:axum-spellings:").await;
    let app = App::new();
    let router = app.router().layer(layer);
    let mut puts = 0;
    // The entries each PUT finds: the GET's, and the previous round's
    // re-read of the same user through another spelling.
    for (read, write, name, entries) in [
        ("/users/2", "/users/%32", "Mallory", 1),
        ("/users/%32", "/users/2", "Trent", 2),
        ("/users/%31", "/users/1", "Peggy", 1),
        ("/users/1", "/users/%31", "Victor", 2),
    ] {
        let id: u32 = if read.ends_with('2') { 2 } else { 1 };
        let first = send(&router, get_req(read)).await;
        assert_eq!(first.cache_status(), STORED, "GET {read}");
        puts += 1;
        store.wait_puts(puts).await;
        assert_hit(&send(&router, get_req(read)).await);

        let put = send(&router, put_req(write, name)).await;
        assert_eq!(put.status, StatusCode::NO_CONTENT, "PUT {write}");
        assert_eq!(
            put.cache_status(),
            format!("{}; purged={entries}", support::METHOD),
            "PUT {write} purged what GET {read} stored"
        );
        let after = send(&router, get_req(read)).await;
        assert_eq!(after.cache_status(), STORED, "GET {read} after PUT {write}");
        assert_eq!(after.text(), user_json(id, name));
        puts += 1;
        store.wait_puts(puts).await;
    }
    // Each spelling is its own entry of the one resource: `/users/%32`
    // reads the handler's answer once, then hits, and a purge of `/users/2`
    // takes both spellings.
    assert_eq!(
        send(&router, get_req("/users/2")).await.cache_status(),
        STORED
    );
    store.wait_puts(puts + 1).await;
    let before = app.reads();
    for spelling in ["/users/2", "/users/%32"] {
        assert_hit(&send(&router, get_req(spelling)).await);
    }
    assert_eq!(app.reads(), before);
    let put = send(&router, put_req("/users/2", "Walter")).await;
    assert_eq!(put.cache_status(), format!("{}; purged=2", support::METHOD));
}

/// A spelling that the app routes differently never answers for another:
/// axum matches `/us%65rs/2` against no route (404, which is cacheable),
/// and `/users/2` still reads the user.
#[tokio::test]
async fn axum_one_spellings_answer_is_never_served_for_another() {
    let (_server, store, layer) = redis_layer("t:axum-cpdos:").await;
    let app = App::new();
    let router = app.router().layer(layer);
    let odd = send(&router, get_req("/us%65rs/2")).await;
    assert_eq!(odd.status, StatusCode::NOT_FOUND);
    support::flush_spawned().await;
    let puts = store.stats().puts_finished();
    let user = send(&router, get_req("/users/2")).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.cache_status(), STORED);
    assert_eq!(user.text(), user_json(2, "Bob"));
    store.wait_puts(puts + 1).await;
    let again = send(&router, get_req("/users/2")).await;
    assert_hit(&again);
    assert_eq!(again.status, StatusCode::OK);
}

/// What no canonical form can know (`/members/02` and `/members/2` are one
/// user to `Path<u32>`), the handler names in a `PurgePaths` extension; the
/// layer purges it and strips it from the response.
#[tokio::test]
async fn axum_a_handler_names_the_resources_its_write_changed() {
    let (_server, store, layer) = redis_layer("t:axum-named:").await;
    let app = App::new();
    let router = app.router().layer(layer);
    assert_eq!(
        send(&router, get_req("/members/2")).await.cache_status(),
        STORED
    );
    store.wait_puts(1).await;
    assert_hit(&send(&router, get_req("/members/2")).await);

    let mut service = router.clone();
    let response = service
        .call(put_req("/members/02", "Mallory"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.extensions().get::<PurgePaths>().is_none(),
        "the extension is the layer's, not the client's"
    );
    assert_eq!(
        support::cache_status_of(response.headers()),
        format!("{}; purged=1", support::METHOD)
    );
    let after = send(&router, get_req("/members/2")).await;
    assert_eq!(after.cache_status(), STORED);
    assert_eq!(after.text(), user_json(2, "Mallory"));
}

/// Declared routes are matched in the path's RFC 3986 normal form: an
/// encoded spelling does not slip past `Route::bypass()`.
#[tokio::test]
async fn axum_route_rules_meet_every_spelling() {
    let layer = CacheAsideLayer::builder(MemoryStore::new())
        .route("/users/{id}", Route::bypass())
        .build()
        .unwrap();
    let router = App::new().router().layer(layer);
    for spelling in ["/users/1", "/users/%31", "/%75sers/1", "/users/%7e"] {
        let reply = send(&router, get_req(spelling)).await;
        assert_eq!(reply.cache_status(), bypass("route"), "{spelling}");
    }
    let odd = send(&router, get_req("/users/%zz")).await;
    assert_eq!(odd.cache_status(), bypass("route"));
    let malformed = send(&router, get_req("/session/%zz")).await;
    assert_eq!(malformed.cache_status(), bypass("target-encoding"));
}

#[tokio::test]
async fn axum_hit_after_miss_replays_the_response() {
    let (_server, store, layer) = redis_layer("t:axum-hit:").await;
    let app = App::new();
    let router = app.router().layer(layer);

    let miss = send(&router, get_req("/users/1")).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.cache_status(), STORED);
    assert_eq!(miss.text(), user_json(1, "Alice"));
    store.wait_puts(1).await;

    let hit = send(&router, get_req("/users/1")).await;
    assert_hit(&hit);
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.origin_headers(), miss.origin_headers());
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(
        hit.header("content-length"),
        Some(miss.body.len().to_string().as_str())
    );
    assert_eq!(app.reads(), 1, "the handler ran once for two GETs");

    // 304 on a matching If-None-Match.
    let conditional = send(
        &router,
        req(Method::GET, "/users/1", &[("if-none-match", "\"u1\"")]),
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert!(conditional.body.is_empty());
    assert_hit(&conditional);
    assert_eq!(app.reads(), 1);
}

#[tokio::test]
async fn axum_head_is_served_from_the_get_entry_and_a_head_miss_stores_nothing() {
    let (_server, store, layer) = redis_layer("t:axum-head:").await;
    let app = App::new();
    let router = app.router().layer(layer);

    for round in 1..=2 {
        let headed = send(&router, req(Method::HEAD, "/users/2", &[])).await;
        assert_eq!(headed.status, StatusCode::OK);
        assert_eq!(headed.cache_status(), MISS);
        assert!(headed.body.is_empty());
        assert_eq!(app.reads(), round, "HEAD misses reach the handler");
    }
    support::flush_spawned().await;
    assert_eq!(store.stats().puts_started, 0, "a HEAD miss stores nothing");

    let got = send(&router, get_req("/users/2")).await;
    assert_eq!(got.cache_status(), STORED);
    store.wait_puts(1).await;
    let headed = send(&router, req(Method::HEAD, "/users/2", &[])).await;
    assert_hit(&headed);
    assert!(headed.body.is_empty());
    assert_eq!(
        headed.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    assert_eq!(app.reads(), 3, "the HEAD hit did not reach the handler");
}

#[tokio::test]
async fn axum_credentials_set_cookie_and_writes_are_never_cached() {
    let (_server, store, layer) = redis_layer("t:axum-never:").await;
    let app = App::new();
    let router = app.router().layer(layer);

    assert_eq!(
        send(&router, get_req("/users/1")).await.cache_status(),
        STORED
    );
    store.wait_puts(1).await;

    // Credentials: not looked up, though an entry exists.
    let authorized = send(
        &router,
        req(Method::GET, "/users/1", &[("authorization", "Bearer t")]),
    )
    .await;
    assert_eq!(authorized.cache_status(), bypass("authorization"));
    assert_eq!(authorized.text(), user_json(1, "Alice"));
    assert_eq!(app.reads(), 2);

    // Set-Cookie: never stored.
    for round in 1..=2 {
        let reply = send(&router, get_req("/session")).await;
        assert_eq!(reply.cache_status(), support::miss("set-cookie"));
        assert_eq!(reply.header("set-cookie"), Some("session=fresh"));
        assert_eq!(app.reads(), 2 + round);
        // The lease goes back in the background; a request that overtook
        // it would wait for it and say `fill-released` instead.
        store
            .wait_until("the lease's release", |s| s.releases >= round)
            .await;
    }

    // A write goes to the handler, is not stored, and the next GET reads it.
    let put = send(
        &router,
        Request::builder()
            .method(Method::PUT)
            .uri("/users/1")
            .header("host", HOST)
            .body(Body::from("Alicia"))
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let status = put.cache_status();
    assert!(status.starts_with(support::METHOD), "{status}");
    let after = send(&router, get_req("/users/1")).await;
    assert_eq!(after.text(), user_json(1, "Alicia"), "read your writes");
    assert_eq!(after.cache_status(), STORED);
    support::flush_spawned().await;
    assert_eq!(store.stats().puts_started, 2, "the first GET and the last");
}

#[tokio::test]
async fn axum_404_is_cached_with_the_negative_ttl() {
    let (_server, store, layer) = redis_layer("t:axum-404:").await;
    let app = App::new();
    let router = app.router().layer(layer);

    let miss = send(&router, get_req("/users/99")).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert_eq!(miss.cache_status(), STORED);
    store.wait_puts(1).await;
    let hit = send(&router, get_req("/users/99")).await;
    assert_eq!(hit.status, StatusCode::NOT_FOUND);
    assert_eq!(hit.text(), "no such user");
    let ttl = assert_hit(&hit);
    assert!(ttl <= 30, "the negative ttl (30 s), got {ttl}");
    assert_eq!(app.reads(), 1);
}

/// A server holds a service per connection and moves its futures and bodies
/// across threads: clones of the service answer concurrently from spawned
/// tasks (which `Send` bounds permit to compile at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_is_clone_and_its_future_and_body_are_send() {
    fn is_clone<T: Clone>() {}
    fn is_send<T: Send>() {}
    fn is_sync<T: Sync>() {}
    fn is_static<T: 'static>() {}
    type Svc = CacheAside<Router>;
    is_clone::<Svc>();
    is_send::<Svc>();
    is_sync::<Svc>();
    is_static::<Svc>();
    is_send::<<Svc as Service<Request<Body>>>::Future>();
    is_send::<ResponseBody<Body>>();
    is_clone::<CacheAsideLayer>();
    is_send::<CacheAsideLayer>();
    is_sync::<CacheAsideLayer>();

    let app = App::new();
    let svc: Svc = CacheAsideLayer::builder(MemoryStore::new())
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(app.router());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let path = format!("/users/{}", i % 2 + 1);
                let ready =
                    std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut svc, cx))
                        .await;
                ready.unwrap();
                let response = svc.call(get_req(&path)).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (i, status, body)
            })
        })
        .collect();
    for task in tasks {
        let (i, status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let expected = if i % 2 == 0 {
            user_json(1, "Alice")
        } else {
            user_json(2, "Bob")
        };
        assert_eq!(body, expected);
    }
}

// ---------------------------------------------------------------------------
// End to end over TCP
// ---------------------------------------------------------------------------

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

async fn fetch(client: &HttpClient, method: Method, url: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("HTTP exchange");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("whole body");
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_loopback_tcp() {
    let (_server, store, layer) = redis_layer("t:axum-tcp:").await;
    let app = App::new();
    let router = app.router().layer(layer);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();

    // A body with a length (axum's `Full`), then a streamed one: the entry
    // must be stored in both cases once hyper has sent the body.
    let cases = [
        ("/users/1", user_json(1, "Alice")),
        ("/stream", "one,two,three".to_owned()),
    ];
    for (i, (path, body)) in cases.iter().enumerate() {
        let url = format!("http://{addr}{path}");
        let miss = fetch(&client, Method::GET, &url).await;
        assert_eq!(miss.status, StatusCode::OK, "{path}");
        assert_eq!(miss.cache_status(), STORED, "{path}");
        assert_eq!(miss.text(), body, "{path}");
        store.wait_puts(i + 1).await;

        let hit = fetch(&client, Method::GET, &url).await;
        assert_hit(&hit);
        assert_eq!(hit.text(), body, "{path}");
        assert_eq!(
            hit.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{path}"
        );

        let headed = fetch(&client, Method::HEAD, &url).await;
        assert_hit(&headed);
        assert!(headed.body.is_empty(), "{path}");
    }
    assert_eq!(app.reads(), 2, "one handler run per path");

    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server shuts down")
        .unwrap()
        .unwrap();
}
