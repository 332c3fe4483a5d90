//! The caching behaviour of the layer over a bare `tower::service_fn`,
//! written once and run against both stores: `redis::*` over a real
//! `redis-server` started by the test binary, `memory::*` over `MemoryStore`.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT_LANGUAGE, AUTHORIZATION};
use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};
use tower_cache_aside::http::ResponseBody;
use tower_cache_aside::Route;

use support::{
    assert_hit, bypass, flush_spawned, get, head, headers, miss, request, send, send_unread,
    Backend, Harness, Origin, TestBody, METHOD, MISS, STORED,
};

suite!(
    hit_after_miss_replays_status_headers_and_body,
    client_cache_control_does_not_force_a_miss,
    hop_by_hop_and_computed_headers_are_not_replayed,
    empty_204_is_stored_at_once,
    head_is_served_from_the_get_entry,
    head_miss_does_not_store,
    credentials_range_and_upgrade_bypass_even_when_an_entry_exists,
    unstorable_responses_are_never_stored,
    statuses_outside_the_set_are_never_stored,
    other_methods_are_never_cached,
    keyed_vary_header_is_stored_per_value,
    vary_by_authorization_caches_per_credential,
    body_over_cap_with_content_length_is_not_stored,
    streamed_body_over_cap_is_not_stored,
    body_at_the_cap_is_stored,
    body_cut_off_or_failing_is_not_stored,
    entry_expires_after_its_ttl,
    s_maxage_and_max_age_bound_the_ttl,
    negative_ttl_applies_to_404_and_410,
    host_is_part_of_the_key,
    include_authority_false_shares_entries_across_hosts,
    query_order_does_not_matter,
    query_allowlist_and_ignore_list,
    trailers_are_replayed_on_hits,
    excluded_and_bypass_routes_are_never_cached,
    route_ttl_applies,
    if_none_match_on_a_hit_answers_304,
    purge_and_remove_through_the_store_api,
    large_and_small_entries_alternate_on_one_path,
    kept_heads_answer_as_a_full_decode_does,
    variants_of_one_resource_are_bounded,
);

/// Sleeps a little past `ttl` (waiting for a TTL to pass, not for a signal).
async fn outlive(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
}

/// Sends `make()` twice and asserts that neither response was stored: the
/// layer says `expected` both times, no store write started, and the origin
/// answered both. Returns the first reply.
async fn assert_never_stored<S>(
    h: &Harness,
    svc: &S,
    origin: &Origin,
    make: impl Fn() -> Request<()>,
    expected: &str,
) -> support::Reply
where
    S: Service<
            Request<()>,
            Response = Response<ResponseBody<TestBody>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let path = make().uri().path().to_owned();
    let puts_before = h.store.stats().puts_started;
    let calls_before = origin.calls_for(&path);

    let first = send(svc, make()).await;
    assert_eq!(first.cache_status(), expected, "{path}");
    flush_spawned().await;
    assert_eq!(
        h.store.stats().puts_started,
        puts_before,
        "{path}: no write may start"
    );

    let second = send(svc, make()).await;
    assert_eq!(second.cache_status(), expected, "{path}: again");
    assert_eq!(second.status, first.status, "{path}");
    assert_eq!(second.body, first.body, "{path}");
    flush_spawned().await;
    assert_eq!(
        h.store.stats().puts_started,
        puts_before,
        "{path}: no write may start"
    );
    assert_eq!(
        origin.calls_for(&path),
        calls_before + 2,
        "{path}: the origin answers every time"
    );
    first
}

// ---------------------------------------------------------------------------
// 1. hit after miss
// ---------------------------------------------------------------------------

async fn hit_after_miss_replays_status_headers_and_body(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|_| {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("etag", "\"v1\"")
            .header("cache-control", "public")
            .body(TestBody::full(r#"{"id":1}"#))
            .unwrap()
    });
    let svc = h.layer(|b| b).layer(origin.service());

    let first = send(&svc, get("/users/1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.cache_status(), STORED);
    assert_eq!(first.header("age"), None, "a miss has no Age");
    assert_eq!(first.text(), r#"{"id":1}"#);
    h.store.wait_puts(1).await;

    let second = send(&svc, get("/users/1")).await;
    let ttl = assert_hit(&second);
    assert!(ttl > 0 && ttl <= 60, "ttl {ttl} within the default 60 s");
    assert_eq!(origin.calls(), 1, "the hit did not call the origin");
    assert_eq!(second.status, first.status);
    assert_eq!(second.origin_headers(), first.origin_headers());
    let multi: Vec<_> = second.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"], "repeated header values keep their order");
    assert_eq!(second.header("content-length"), Some("8"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.trailers, None);

    // Hits go on without the origin.
    let third = send(&svc, get("/users/1")).await;
    assert_hit(&third);
    assert_eq!(third.body, first.body);
    assert_eq!(origin.calls(), 1);
    assert_eq!(h.store.stats().puts_started, 1, "hits store nothing");
}

async fn client_cache_control_does_not_force_a_miss(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::text("shared");
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(send(&svc, get("/page")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let reply = send(
        &svc,
        request(
            Method::GET,
            "/page",
            &[
                ("cache-control", "no-cache, max-age=0"),
                ("pragma", "no-cache"),
            ],
        ),
    )
    .await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "shared");
    assert_eq!(origin.calls(), 1);
}

async fn hop_by_hop_and_computed_headers_are_not_replayed(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|_| {
        Response::builder()
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("age", "100")
            .header("cache-status", "origin-cache; hit")
            .header("x-end-to-end", "kept")
            .body(TestBody::full("body"))
            .unwrap()
    });
    let svc = h
        .layer(|b| b.ttl(Duration::from_secs(600)))
        .layer(origin.service());

    let first = send(&svc, get("/hops")).await;
    assert_eq!(first.cache_status(), STORED);
    let members: Vec<_> = first.headers.get_all("cache-status").iter().collect();
    assert_eq!(
        members,
        ["origin-cache; hit", STORED],
        "the layer appends its member after the origin's"
    );
    h.store.wait_puts(1).await;

    let hit = send(&svc, get("/hops")).await;
    assert_hit(&hit);
    for gone in ["connection", "x-hop", "keep-alive"] {
        assert_eq!(hit.header(gone), None, "{gone} is not replayed");
    }
    // The layer's own Age: the origin's, which it arrived with, plus the
    // time it has been stored.
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((100..=102).contains(&age), "Age {age}");
    assert_eq!(hit.header("x-end-to-end"), Some("kept"));
    assert_eq!(hit.text(), "body");
}

async fn empty_204_is_stored_at_once(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|_| {
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header("x-origin", "yes")
            .body(TestBody::full(""))
            .unwrap()
    });
    let svc = h.layer(|b| b).layer(origin.service());

    // The body is never read: an empty body is complete from the start.
    let first = send_unread(&svc, get("/empty")).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(support::cache_status_of(first.headers()), STORED);
    h.store.wait_puts(1).await;
    drop(first);

    let hit = send(&svc, get("/empty")).await;
    assert_hit(&hit);
    assert_eq!(hit.status, StatusCode::NO_CONTENT);
    assert_eq!(hit.header("x-origin"), Some("yes"));
    assert_eq!(hit.header("content-length"), None, "a 204 has no length");
    assert!(hit.body.is_empty());
    assert_eq!(origin.calls(), 1);
}

// ---------------------------------------------------------------------------
// 2. HEAD
// ---------------------------------------------------------------------------

async fn head_is_served_from_the_get_entry(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::text("hello world");
    let svc = h.layer(|b| b).layer(origin.service());

    let got = send(&svc, get("/doc")).await;
    assert_eq!(got.cache_status(), STORED);
    h.store.wait_puts(1).await;

    let headed = send(&svc, head("/doc")).await;
    assert_hit(&headed);
    assert_eq!(headed.status, StatusCode::OK);
    assert!(headed.body.is_empty(), "a HEAD hit has no body");
    assert_eq!(headed.trailers, None);
    assert_eq!(headed.header("content-length"), Some("11"));
    assert_eq!(headed.header("content-type"), Some("text/plain"));
    assert_eq!(origin.calls(), 1, "the HEAD hit did not call the origin");

    // The GET entry is still whole after a HEAD.
    let again = send(&svc, get("/doc")).await;
    assert_hit(&again);
    assert_eq!(again.text(), "hello world");
    assert_eq!(origin.calls(), 1);
}

async fn head_miss_does_not_store(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::text("body of GET");
    let svc = h.layer(|b| b).layer(origin.service());

    let first = assert_never_stored(&h, &svc, &origin, || head("/head-first"), MISS).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.is_empty());

    // Nor did it leave anything a GET could hit.
    let got = send(&svc, get("/head-first")).await;
    assert_eq!(got.cache_status(), STORED);
    assert_eq!(got.text(), "body of GET");
    assert_eq!(origin.calls_for("/head-first"), 3);
}

// ---------------------------------------------------------------------------
// 3. never stored
// ---------------------------------------------------------------------------

async fn credentials_range_and_upgrade_bypass_even_when_an_entry_exists(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let who = ["authorization", "cookie", "range", "upgrade"]
            .iter()
            .find(|n| req.headers().contains_key(**n))
            .copied()
            .unwrap_or("public");
        Response::new(TestBody::full(format!("for {who}")))
    });
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(send(&svc, get("/account")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    assert_hit(&send(&svc, get("/account")).await);
    let gets = h.store.stats().gets;

    let cases = [
        ("authorization", "Bearer secret", "authorization"),
        ("cookie", "session=abc", "cookie"),
        ("range", "bytes=0-3", "range"),
        ("upgrade", "websocket", "upgrade"),
    ];
    for (header, value, detail) in cases {
        let make = || request(Method::GET, "/account", &[(header, value)]);
        let reply = assert_never_stored(&h, &svc, &origin, make, &bypass(detail)).await;
        assert_eq!(reply.text(), format!("for {header}"), "the origin answered");
        assert_eq!(reply.header("age"), None);
    }
    assert_eq!(
        h.store.stats().gets,
        gets,
        "bypassed requests are not looked up"
    );

    // The public entry is untouched.
    let public = send(&svc, get("/account")).await;
    assert_hit(&public);
    assert_eq!(public.text(), "for public");
    assert_eq!(origin.calls_for("/account"), 1 + 2 * cases.len());
}

async fn unstorable_responses_are_never_stored(backend: Backend, name: &str) {
    /// Path, response headers, the `detail` expected.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    const CASES: &[Case] = &[
        (
            "/set-cookie",
            &[("set-cookie", "session=abc")],
            "set-cookie",
        ),
        (
            "/private",
            &[("cache-control", "private, max-age=60")],
            "private",
        ),
        ("/no-store", &[("cache-control", "no-store")], "no-store"),
        (
            "/no-cache",
            &[("cache-control", "public, no-cache")],
            "no-cache",
        ),
        ("/vary-star", &[("vary", "*")], "vary"),
        (
            "/vary-star-among-names",
            &[("vary", "Accept-Language, Accept-Encoding, *")],
            "vary",
        ),
        (
            "/vary-too-many",
            &[("vary", "a, b, c, d, e, f, g, h, i")],
            "vary",
        ),
        ("/vary-bad-name", &[("vary", "accept encoding")], "vary"),
        (
            "/no-store-second-line",
            &[("cache-control", "public"), ("cache-control", "no-store")],
            "no-store",
        ),
        (
            "/vary-second-line",
            &[("vary", "accept-language"), ("vary", "*")],
            "vary",
        ),
        ("/max-age-0", &[("cache-control", "max-age=0")], "expired"),
        (
            "/max-age-bad",
            &[("cache-control", "max-age=soon")],
            "expired",
        ),
        (
            "/expires-past",
            &[
                ("date", "Tue, 01 Jan 2030 00:00:10 GMT"),
                ("expires", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ],
            "expired",
        ),
    ];
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let (_, pairs, _) = CASES
            .iter()
            .find(|(path, _, _)| *path == req.uri().path())
            .expect("a known path");
        let mut response = Response::builder();
        for (name, value) in *pairs {
            response = response.header(*name, *value);
        }
        response
            .body(TestBody::full(format!("origin {}", req.uri().path())))
            .unwrap()
    });
    let svc = h
        .layer(|b| b.vary_by(ACCEPT_LANGUAGE))
        .layer(origin.service());

    for (path, pairs, detail) in CASES {
        let reply = assert_never_stored(&h, &svc, &origin, || get(path), &miss(detail)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.text(), format!("origin {path}"));
        for (name, value) in *pairs {
            let kept = reply.headers.get_all(*name).iter().any(|v| v == value);
            assert!(kept, "{path}: {name}: {value} kept");
        }
    }
    assert_eq!(h.store.stats().puts_started, 0);
}

async fn statuses_outside_the_set_are_never_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let code: u16 = req.uri().path()[1..].parse().unwrap();
        let mut response = Response::new(TestBody::full(format!("status {code}")));
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        if code == 302 {
            response
                .headers_mut()
                .insert("location", "/elsewhere".parse().unwrap());
        }
        response
    });
    let svc = h.layer(|b| b).layer(origin.service());
    for code in [500u16, 503, 302, 201, 206] {
        let path = format!("/{code}");
        let reply = assert_never_stored(&h, &svc, &origin, || get(&path), &miss("status")).await;
        assert_eq!(reply.status.as_u16(), code, "the origin's status is kept");
        assert_eq!(reply.text(), format!("status {code}"));
    }

    // A narrower set leaves out a status stored by default.
    let narrow = h
        .layer(|b| {
            b.prefix(format!("{}narrow:", h.prefix))
                .statuses([StatusCode::OK])
        })
        .layer(origin.service());
    assert_never_stored(&h, &narrow, &origin, || get("/301"), &miss("status")).await;
    let stored = send(&narrow, get("/200")).await;
    assert_eq!(stored.cache_status(), STORED);
    h.store.wait_puts(1).await;
    assert_hit(&send(&narrow, get("/200")).await);
}

async fn other_methods_are_never_cached(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin =
        Origin::new(|req| Response::new(TestBody::full(format!("{} reply", req.method()))));
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(send(&svc, get("/thing")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let gets = h.store.stats().gets;

    // A safe method other than GET and HEAD: forwarded, and the GET entry
    // stays.
    for _ in 0..2 {
        let reply = send(&svc, request(Method::OPTIONS, "/thing", &[])).await;
        assert_eq!(reply.cache_status(), METHOD);
        assert_eq!(reply.text(), "OPTIONS reply");
    }
    assert_hit(&send(&svc, get("/thing")).await);
    let gets = gets + 1;

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let before = origin.calls_for("/thing");
        for _ in 0..2 {
            let reply = send(&svc, request(method.clone(), "/thing", &[])).await;
            let status = reply.cache_status();
            assert!(status.starts_with(METHOD), "{method}: {status}");
            assert_eq!(
                reply.text(),
                format!("{method} reply"),
                "the origin answered"
            );
            assert_eq!(reply.header("age"), None);
        }
        assert_eq!(origin.calls_for("/thing"), before + 2, "{method}");
    }
    flush_spawned().await;
    let stats = h.store.stats();
    assert_eq!(stats.gets, gets, "other methods are not looked up");
    assert_eq!(stats.puts_started, 1, "nor stored");

    // No other method's answer is ever served to a GET.
    let got = send(&svc, get("/thing")).await;
    assert_eq!(got.text(), "GET reply");
    assert_eq!(got.status, StatusCode::OK);
}

async fn keyed_vary_header_is_stored_per_value(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap());
        Response::builder()
            .header("vary", "Accept-Language")
            .body(TestBody::full(format!("lang={lang}")))
            .unwrap()
    });
    let svc = h
        .layer(|b| b.vary_by(ACCEPT_LANGUAGE))
        .layer(origin.service());
    let with_lang = |lang: &str| request(Method::GET, "/greeting", &[("accept-language", lang)]);

    for (i, lang) in ["en", "fr"].into_iter().enumerate() {
        let reply = send(&svc, with_lang(lang)).await;
        assert_eq!(reply.cache_status(), STORED, "{lang}");
        assert_eq!(reply.text(), format!("lang={lang}"));
        h.store.wait_puts(i + 1).await;
    }
    for lang in ["en", "fr", "en"] {
        let reply = send(&svc, with_lang(lang)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), format!("lang={lang}"), "its own variant");
        assert_eq!(reply.header("vary"), Some("Accept-Language"));
    }
    assert_eq!(origin.calls(), 2);

    // No header is a variant of its own.
    let none = send(&svc, get("/greeting")).await;
    assert_eq!(none.cache_status(), STORED);
    assert_eq!(none.text(), "lang=none");
    assert_eq!(origin.calls(), 3);
}

async fn vary_by_authorization_caches_per_credential(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let who = req
            .headers()
            .get("authorization")
            .map_or("anonymous", |v| v.to_str().unwrap());
        Response::new(TestBody::full(format!("profile of {who}")))
    });
    let svc = h
        .layer(|b| b.vary_by(AUTHORIZATION))
        .layer(origin.service());
    let as_user = |token: &str| request(Method::GET, "/me", &[("authorization", token)]);

    for (i, token) in ["Bearer alice", "Bearer bob"].into_iter().enumerate() {
        let reply = send(&svc, as_user(token)).await;
        assert_eq!(reply.cache_status(), STORED, "{token}");
        h.store.wait_puts(i + 1).await;
    }
    for token in ["Bearer bob", "Bearer alice"] {
        let reply = send(&svc, as_user(token)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), format!("profile of {token}"));
    }
    assert_eq!(origin.calls(), 2);

    let anonymous = send(&svc, get("/me")).await;
    assert_eq!(anonymous.cache_status(), STORED);
    assert_eq!(anonymous.text(), "profile of anonymous");
    let stranger = send(&svc, as_user("Bearer mallory")).await;
    assert_eq!(stranger.cache_status(), STORED);
    assert_eq!(stranger.text(), "profile of Bearer mallory");
    assert_eq!(origin.calls(), 4);

    // A cookie is still a bypass: only Authorization is keyed.
    let cookie = request(Method::GET, "/me", &[("cookie", "a=b")]);
    assert_eq!(send(&svc, cookie).await.cache_status(), bypass("cookie"));
}

// ---------------------------------------------------------------------------
// 3/4. size cap
// ---------------------------------------------------------------------------

const CAP: usize = 64;

async fn body_over_cap_with_content_length_is_not_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let big = "x".repeat(CAP + 1);
    let body = big.clone();
    let origin = Origin::new(move |_| {
        Response::builder()
            .header("content-length", body.len())
            .body(TestBody::full(body.clone()))
            .unwrap()
    });
    let svc = h.layer(|b| b.max_body_bytes(CAP)).layer(origin.service());
    let reply = assert_never_stored(&h, &svc, &origin, || get("/big"), &miss("too-large")).await;
    assert_eq!(reply.text(), big, "the client gets the whole body");
}

async fn streamed_body_over_cap_is_not_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let body = TestBody::chunks(vec!["0123456789"; 7]);
        match req.uri().path() {
            "/lazy" => Response::new(body.lazy_end()),
            _ => Response::new(body),
        }
    });
    let svc = h.layer(|b| b.max_body_bytes(CAP)).layer(origin.service());
    // Without a length the response is admitted, and dropped at the cap.
    for path in ["/stream", "/lazy"] {
        let reply = assert_never_stored(&h, &svc, &origin, || get(path), STORED).await;
        assert_eq!(
            reply.body.len(),
            70,
            "{path}: the client gets the whole body"
        );
        assert_eq!(reply.text(), "0123456789".repeat(7));
    }
}

async fn body_at_the_cap_is_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let chunks = match req.uri().path() {
            "/exact" | "/lazy" => vec!["01234567"; 8],
            _ => vec!["01234567"; 4],
        };
        let mut body = TestBody::chunks(chunks);
        if req.uri().path() == "/lazy" {
            body = body.lazy_end();
        }
        let mut response = Response::new(body);
        if req.uri().path() == "/with-length" {
            response
                .headers_mut()
                .insert("content-length", "32".parse().unwrap());
        }
        response
    });
    let svc = h.layer(|b| b.max_body_bytes(CAP)).layer(origin.service());
    for (i, path) in ["/exact", "/with-length", "/lazy"].into_iter().enumerate() {
        let first = send(&svc, get(path)).await;
        assert_eq!(first.cache_status(), STORED, "{path}");
        h.store.wait_puts(i + 1).await;
        let hit = send(&svc, get(path)).await;
        assert_hit(&hit);
        assert_eq!(hit.body, first.body, "{path}");
        assert_eq!(
            hit.header("content-length"),
            Some(first.body.len().to_string().as_str())
        );
    }
    assert_eq!(origin.calls(), 3);
}

async fn body_cut_off_or_failing_is_not_stored(backend: Backend, name: &str) {
    use http_body_util::BodyExt;

    let h = backend.harness(name).await;
    let origin = Origin::new(|req| match req.uri().path() {
        "/failing" => Response::new(TestBody::failing("partial")),
        _ => Response::new(TestBody::chunks(["first", "second", "third"])),
    });
    let svc = h.layer(|b| b).layer(origin.service());

    // A body that fails: the client sees the error, nothing is stored.
    for round in 1..=2 {
        let response = send_unread(&svc, get("/failing")).await;
        assert_eq!(support::cache_status_of(response.headers()), STORED);
        let error = response.into_body().collect().await;
        assert!(error.is_err(), "the body's error reaches the client");
        flush_spawned().await;
        assert_eq!(h.store.stats().puts_started, 0);
        assert_eq!(origin.calls_for("/failing"), round, "a miss every time");
    }

    // A client that goes away after the first frame: nothing is stored.
    for round in 1..=2 {
        let response = send_unread(&svc, get("/cut")).await;
        assert_eq!(support::cache_status_of(response.headers()), STORED);
        let mut body = response.into_body();
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().unwrap(), "first");
        drop(body);
        flush_spawned().await;
        assert_eq!(h.store.stats().puts_started, 0);
        assert_eq!(origin.calls_for("/cut"), round, "a miss every time");
    }

    // Read whole, the same response is stored.
    let whole = send(&svc, get("/cut")).await;
    assert_eq!(whole.text(), "firstsecondthird");
    h.store.wait_puts(1).await;
    assert_hit(&send(&svc, get("/cut")).await);
}

// ---------------------------------------------------------------------------
// 4. lifetimes
// ---------------------------------------------------------------------------

async fn entry_expires_after_its_ttl(backend: Backend, name: &str) {
    let ttl = Duration::from_secs(1);
    let h = backend.harness(name).await;
    let origin = Origin::text("short-lived");
    let svc = h.layer(|b| b.ttl(ttl)).layer(origin.service());

    assert_eq!(send(&svc, get("/ttl")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let hit = send(&svc, get("/ttl")).await;
    assert!(assert_hit(&hit) <= 1, "ttl bounded by the 1 s setting");

    outlive(ttl).await;
    let after = send(&svc, get("/ttl")).await;
    assert_eq!(
        after.cache_status(),
        STORED,
        "expired: a miss, stored again"
    );
    assert_eq!(after.text(), "short-lived");
    assert_eq!(origin.calls(), 2);
}

async fn s_maxage_and_max_age_bound_the_ttl(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let cc = match req.uri().path() {
            "/r/smax" => "public, max-age=600, s-maxage=1",
            "/r/maxage" => "public, max-age=1",
            _ => "public, s-maxage=3600",
        };
        Response::builder()
            .header("cache-control", cc)
            .body(TestBody::full(req.uri().path().to_owned()))
            .unwrap()
    });
    let svc = h
        .layer(|b| b.route("/r/{name}", Route::new().ttl(Duration::from_secs(60))))
        .layer(origin.service());

    let paths = ["/r/smax", "/r/maxage", "/r/long"];
    for (i, path) in paths.into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
        h.store.wait_puts(i + 1).await;
    }
    for path in ["/r/smax", "/r/maxage"] {
        let hit = send(&svc, get(path)).await;
        let ttl = assert_hit(&hit);
        assert!(
            ttl <= 1,
            "{path}: the response's age bounds the ttl, got {ttl}"
        );
    }
    let long = send(&svc, get("/r/long")).await;
    let ttl = assert_hit(&long);
    assert!(
        ttl > 1 && ttl <= 60,
        "s-maxage never lengthens the route's 60 s, got {ttl}"
    );

    outlive(Duration::from_secs(1)).await;
    for path in ["/r/smax", "/r/maxage"] {
        let after = send(&svc, get(path)).await;
        assert_eq!(after.cache_status(), STORED, "{path} expired");
        assert_eq!(after.text(), path);
    }
    assert_hit(&send(&svc, get("/r/long")).await);
    assert_eq!(origin.calls(), 5);
}

async fn negative_ttl_applies_to_404_and_410(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let status = match req.uri().path() {
            "/missing" => StatusCode::NOT_FOUND,
            "/gone" => StatusCode::GONE,
            _ => StatusCode::OK,
        };
        let mut response = Response::new(TestBody::full(status.to_string()));
        *response.status_mut() = status;
        response
    });
    let svc = h
        .layer(|b| b.negative_ttl(Duration::from_secs(1)))
        .layer(origin.service());

    let paths = ["/missing", "/gone", "/present"];
    for (i, path) in paths.into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
        h.store.wait_puts(i + 1).await;
    }
    for (path, status) in [("/missing", 404), ("/gone", 410)] {
        let hit = send(&svc, get(path)).await;
        let ttl = assert_hit(&hit);
        assert!(ttl <= 1, "{path}: negative ttl, got {ttl}");
        assert_eq!(hit.status.as_u16(), status);
        assert_eq!(
            hit.text(),
            StatusCode::from_u16(status).unwrap().to_string()
        );
    }
    let present = send(&svc, get("/present")).await;
    let ttl = assert_hit(&present);
    assert!(ttl > 1, "a 200 keeps the default ttl, got {ttl}");

    outlive(Duration::from_secs(1)).await;
    for (path, status) in [("/missing", 404), ("/gone", 410)] {
        let after = send(&svc, get(path)).await;
        assert_eq!(after.cache_status(), STORED, "{path} expired");
        assert_eq!(after.status.as_u16(), status);
    }
    assert_hit(&send(&svc, get("/present")).await);
    assert_eq!(origin.calls(), 5);
}

// ---------------------------------------------------------------------------
// 5. keys
// ---------------------------------------------------------------------------

fn echo_host() -> Origin {
    Origin::new(|req| {
        let host = req.headers()["host"].to_str().unwrap().to_owned();
        Response::new(TestBody::full(format!("site {host}")))
    })
}

async fn host_is_part_of_the_key(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = echo_host();
    let svc = h.layer(|b| b).layer(origin.service());
    let at = |host: &str| request(Method::GET, "/home", &[("host", host)]);

    for (i, host) in ["a.example", "b.example"].into_iter().enumerate() {
        let reply = send(&svc, at(host)).await;
        assert_eq!(reply.cache_status(), STORED, "{host}");
        h.store.wait_puts(i + 1).await;
    }
    assert_eq!(origin.calls(), 2, "two hosts, two origin calls");
    for host in ["a.example", "b.example", "A.Example"] {
        let reply = send(&svc, at(host)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), format!("site {}", host.to_lowercase()));
    }
    assert_eq!(origin.calls(), 2);

    // A Host that runs into the path does not reach another entry: with
    // host and path side by side, `a.example` + `/users/1` and
    // `a.example/users` + `/1` would read the same.
    let legit = request(Method::GET, "/users/1", &[("host", "a.example")]);
    assert_eq!(send(&svc, legit).await.cache_status(), STORED);
    h.store.wait_puts(3).await;
    let forged = request(Method::GET, "/1", &[("host", "a.example/users")]);
    let forged = send(&svc, forged).await;
    assert_eq!(
        forged.cache_status(),
        STORED,
        "a miss, not the entry of /users/1"
    );
    assert_eq!(forged.text(), "site a.example/users");
    assert_eq!(origin.calls(), 4);
}

async fn include_authority_false_shares_entries_across_hosts(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = echo_host();
    let svc = h
        .layer(|b| b.include_authority(false))
        .layer(origin.service());
    let at = |host: &str| request(Method::GET, "/home", &[("host", host)]);

    assert_eq!(send(&svc, at("a.example")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let other = send(&svc, at("b.example")).await;
    assert_hit(&other);
    assert_eq!(other.text(), "site a.example", "one entry for every host");
    assert_eq!(origin.calls(), 1);
}

fn echo_query() -> Origin {
    Origin::new(|req| Response::new(TestBody::full(req.uri().query().unwrap_or("").to_owned())))
}

async fn query_order_does_not_matter(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = echo_query();
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(send(&svc, get("/q?b=2&a=1")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let hit = send(&svc, get("/q?a=1&b=2")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "b=2&a=1", "the stored answer");
    assert_eq!(origin.calls(), 1);

    for other in ["/q?a=1&b=3", "/q?a=1", "/q", "/q?a=1&b=2&c=3"] {
        assert_eq!(
            send(&svc, get(other)).await.cache_status(),
            STORED,
            "{other}"
        );
    }
    assert_eq!(origin.calls(), 5, "other queries are other entries");
}

async fn query_allowlist_and_ignore_list(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = echo_query();
    let allow = h
        .layer(|b| {
            b.prefix(format!("{}allow:", h.prefix))
                .query_allowlist(["page"])
        })
        .layer(origin.service());
    let ignore = h
        .layer(|b| {
            b.prefix(format!("{}ignore:", h.prefix))
                .query_ignore(["utm_source"])
        })
        .layer(origin.service());

    assert_eq!(
        send(&allow, get("/list?page=2&utm=x")).await.cache_status(),
        STORED
    );
    h.store.wait_puts(1).await;
    for hit in ["/list?utm=y&page=2", "/list?page=2"] {
        let reply = send(&allow, get(hit)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), "page=2&utm=x", "{hit}");
    }
    assert_eq!(
        send(&allow, get("/list?page=3&utm=x")).await.cache_status(),
        STORED
    );
    assert_eq!(origin.calls(), 2);
    h.store.wait_puts(2).await;

    assert_eq!(
        send(&ignore, get("/list?id=1&utm_source=a"))
            .await
            .cache_status(),
        STORED
    );
    h.store.wait_puts(3).await;
    let reply = send(&ignore, get("/list?utm_source=b&id=1")).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "id=1&utm_source=a");
    for miss_path in ["/list?id=2&utm_source=a", "/list?id=1&utm=a"] {
        assert_eq!(
            send(&ignore, get(miss_path)).await.cache_status(),
            STORED,
            "{miss_path}"
        );
    }
    assert_eq!(origin.calls(), 5);
}

// ---------------------------------------------------------------------------
// 8. trailers
// ---------------------------------------------------------------------------

async fn trailers_are_replayed_on_hits(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|_| {
        Response::builder()
            .header("content-type", "application/grpc")
            .body(TestBody::with_trailers(
                "payload",
                headers(&[("grpc-status", "0"), ("x-checksum", "abc123")]),
            ))
            .unwrap()
    });
    let svc = h.layer(|b| b).layer(origin.service());

    let first = send(&svc, get("/rpc")).await;
    assert_eq!(first.cache_status(), STORED);
    let trailers = first
        .trailers
        .clone()
        .expect("the miss streams the trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    h.store.wait_puts(1).await;

    let hit = send(&svc, get("/rpc")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "payload");
    assert_eq!(hit.trailers, Some(trailers), "the hit replays the trailers");
    assert_eq!(hit.header("content-type"), Some("application/grpc"));
    assert_eq!(origin.calls(), 1);
}

// ---------------------------------------------------------------------------
// 10. routes
// ---------------------------------------------------------------------------

async fn excluded_and_bypass_routes_are_never_cached(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::text("dynamic");
    let svc = h
        .layer(|b| {
            b.exclude("/admin/{*rest}")
                .route("/private/{id}", Route::bypass())
                .route("/public/{id}", Route::new())
        })
        .layer(origin.service());

    for path in ["/admin/users", "/admin/a/b", "/private/7"] {
        let reply = assert_never_stored(&h, &svc, &origin, || get(path), &bypass("route")).await;
        assert_eq!(reply.text(), "dynamic");
    }
    assert_eq!(h.store.stats().gets, 0, "bypassed routes are not looked up");

    for path in ["/public/7", "/admin"] {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    h.store.wait_puts(2).await;
    assert_hit(&send(&svc, get("/public/7")).await);
}

async fn route_ttl_applies(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|req| {
        let mut response = Response::new(TestBody::full(req.uri().path().to_owned()));
        if req.uri().path().ends_with("/missing") {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        response
    });
    let svc = h
        .layer(|b| {
            b.route("/short/{id}", Route::new().ttl(Duration::from_secs(1)))
                .route(
                    "/neg/{id}",
                    Route::new().negative_ttl(Duration::from_secs(1)),
                )
        })
        .layer(origin.service());

    let paths = ["/short/1", "/neg/missing", "/neg/1", "/default"];
    for (i, path) in paths.into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
        h.store.wait_puts(i + 1).await;
    }
    for path in ["/short/1", "/neg/missing"] {
        let ttl = assert_hit(&send(&svc, get(path)).await);
        assert!(ttl <= 1, "{path}: the route's 1 s, got {ttl}");
    }
    for path in ["/neg/1", "/default"] {
        let ttl = assert_hit(&send(&svc, get(path)).await);
        assert!(ttl > 1, "{path}: the default 60 s, got {ttl}");
    }

    outlive(Duration::from_secs(1)).await;
    for path in ["/short/1", "/neg/missing"] {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    for path in ["/neg/1", "/default"] {
        assert_hit(&send(&svc, get(path)).await);
    }
    assert_eq!(origin.calls(), 6);
}

// ---------------------------------------------------------------------------
// 12. conditional requests
// ---------------------------------------------------------------------------

async fn if_none_match_on_a_hit_answers_304(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = Origin::new(|_| {
        Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "public, max-age=60")
            .header("content-type", "text/plain")
            .body(TestBody::full("version one"))
            .unwrap()
    });
    let svc = h.layer(|b| b).layer(origin.service());
    let conditional = |tag: &str| request(Method::GET, "/doc", &[("if-none-match", tag)]);

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;

    for tag in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        let reply = send(&svc, conditional(tag)).await;
        assert_hit(&reply);
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert!(reply.body.is_empty(), "{tag}: a 304 has no body");
        assert_eq!(reply.header("etag"), Some("\"v1\""));
        assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
    }
    let changed = send(&svc, conditional("\"v2\"")).await;
    assert_hit(&changed);
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.text(), "version one");
    assert_eq!(origin.calls(), 1);
}

// ---------------------------------------------------------------------------
// The store API
// ---------------------------------------------------------------------------

async fn purge_and_remove_through_the_store_api(backend: Backend, name: &str) {
    use tower_cache_aside::Store;

    let h = backend.harness(name).await;
    let origin = echo_query();
    let svc = h.layer(|b| b).layer(origin.service());

    let paths = ["/p?v=1", "/p?v=2", "/other?v=1"];
    for (i, path) in paths.into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED);
        h.store.wait_puts(i + 1).await;
    }
    let keys = h.store.keys_put();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys[0].resource(),
        keys[1].resource(),
        "one resource, two variants"
    );
    assert_ne!(keys[0].variant(), keys[1].variant());
    assert_eq!(keys[0].resource().prefix(), h.prefix);

    let removed = h.store.purge_resource(keys[0].resource()).await.unwrap();
    assert_eq!(removed, 2, "both variants of /p");
    for path in ["/p?v=1", "/p?v=2"] {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    assert_hit(&send(&svc, get("/other?v=1")).await);

    h.store.remove(&keys[2]).await.unwrap();
    assert_eq!(send(&svc, get("/other?v=1")).await.cache_status(), STORED);
    assert_eq!(origin.calls(), 6);
}

// ---------------------------------------------------------------------------
// Large and small entries
// ---------------------------------------------------------------------------

/// The Redis store returns small values from its lookup script and reads
/// large ones (over 2 KiB) with a `GET`, sent along with the script once it
/// has seen the entry large. One path whose body changes size across
/// writes goes through every way: large first seen, large expected, small
/// where large was expected, small again; GET and HEAD; and, on Redis,
/// after the server forgot its scripts.
async fn large_and_small_entries_alternate_on_one_path(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let size = Arc::new(AtomicUsize::new(16 * 1024));
    let origin = {
        let size = size.clone();
        Origin::new(move |req| {
            let n = size.load(Ordering::SeqCst);
            let body: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let body = if req.method() == Method::HEAD {
                String::new()
            } else {
                body
            };
            Response::builder()
                .header("content-type", "text/plain")
                .body(TestBody::full(body))
                .unwrap()
        })
    };
    let svc = h.layer(|b| b).layer(origin.service());
    let expected =
        |n: usize| -> String { (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect() };

    let mut puts = 0;
    for (round, n) in [16 * 1024, 200, 200, 16 * 1024, 3000]
        .into_iter()
        .enumerate()
    {
        size.store(n, Ordering::SeqCst);
        if round > 0 {
            // A write purges the path; the next GET fills it anew.
            let written = send(&svc, request(Method::PUT, "/doc", &[])).await;
            assert_eq!(written.status, StatusCode::OK, "round {round}");
        }
        let calls = origin.calls();
        let first = send(&svc, get("/doc")).await;
        assert_eq!(
            first.cache_status(),
            STORED,
            "round {round}: a miss after the purge"
        );
        assert_eq!(first.text(), expected(n));
        puts += 1;
        h.store.wait_puts(puts).await;
        for hit in 0..3 {
            let reply = send(&svc, get("/doc")).await;
            assert_hit(&reply);
            assert_eq!(reply.body.len(), n, "round {round}, hit {hit}");
            assert_eq!(reply.text(), expected(n), "round {round}, hit {hit}");
            assert_eq!(reply.header("content-length"), Some(n.to_string().as_str()));
        }
        let headed = send(&svc, head("/doc")).await;
        assert_hit(&headed);
        assert!(headed.body.is_empty());
        assert_eq!(
            headed.header("content-length"),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            origin.calls(),
            calls + 1,
            "round {round}: the rest were hits"
        );

        if let (0, Some(server)) = (round, &h.redis) {
            // The server forgets its scripts: the lookups that follow send
            // them in full, on both ways of reading.
            let raw = support::fred_client(&server.url()).await;
            fred::interfaces::LuaInterface::script_flush(&raw, false)
                .await
                .expect("SCRIPT FLUSH");
            for _ in 0..2 {
                let reply = send(&svc, get("/doc")).await;
                assert_hit(&reply);
                assert_eq!(reply.text(), expected(n));
            }
        }
    }
}

/// A hit reuses the head it decoded the last time it read the same bytes
/// (`Builder::decoded_heads`): what it answers is what a layer that keeps
/// none answers, read after read, for GET, HEAD and a matching
/// `If-None-Match`; and once the entry is written again with another body,
/// the new body is served, never the old head's.
async fn kept_heads_answer_as_a_full_decode_does(backend: Backend, name: &str) {
    use tower_cache_aside::Store;

    let h = backend.harness(name).await;
    let version = Arc::new(AtomicUsize::new(1));
    let body_version = version.clone();
    let origin = Origin::new(move |_| {
        let v = body_version.load(Ordering::SeqCst);
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("etag", format!("\"v{v}\""))
            .body(TestBody::full(format!(r#"{{"version":{v}}}"#)))
            .unwrap()
    });
    let kept = h.layer(|b| b).layer(origin.service());
    let decoded = h.layer(|b| b.decoded_heads(0)).layer(origin.service());

    assert_eq!(send(&kept, get("/k")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let conditional = || request(Method::GET, "/k", &[("if-none-match", "\"v1\"")]);
    for round in 0..3 {
        for (what, make) in [
            ("GET", &(|| get("/k")) as &dyn Fn() -> Request<()>),
            ("HEAD", &|| head("/k")),
            ("If-None-Match", &conditional),
        ] {
            let a = send(&kept, make()).await;
            let b = send(&decoded, make()).await;
            assert_hit(&a);
            assert_hit(&b);
            assert_eq!(a.status, b.status, "{what}, round {round}");
            assert_eq!(
                a.origin_headers(),
                b.origin_headers(),
                "{what}, round {round}"
            );
            assert_eq!(
                a.header("content-length"),
                b.header("content-length"),
                "{what}, round {round}"
            );
            assert_eq!(a.body, b.body, "{what}, round {round}");
            assert_eq!(a.trailers, b.trailers, "{what}, round {round}");
        }
    }
    assert_eq!(send(&kept, get("/k")).await.text(), r#"{"version":1}"#);

    // Written again: a body of the same length and another ETag, so the
    // stored head differs in its times and one field only.
    version.store(2, Ordering::SeqCst);
    h.store
        .purge_resource(h.store.keys_put()[0].resource())
        .await
        .unwrap();
    assert_eq!(send(&kept, get("/k")).await.cache_status(), STORED);
    h.store.wait_puts(2).await;
    for _ in 0..2 {
        let hit = send(&kept, get("/k")).await;
        assert_hit(&hit);
        assert_eq!(hit.text(), r#"{"version":2}"#);
        assert_eq!(hit.header("etag"), Some("\"v2\""));
        assert_eq!(hit.header("content-length"), Some("13"));
    }
    assert_eq!(origin.calls(), 2);
}

// ---------------------------------------------------------------------------
// Bounded variants per resource
// ---------------------------------------------------------------------------

/// A flood of distinct queries on one path stops growing its resource at
/// the bound, while the variants stored keep hitting; a route sets its own
/// bound; a purge gives the room back.
async fn variants_of_one_resource_are_bounded(backend: Backend, name: &str) {
    const MAX: usize = 8;
    let h = backend.harness(name).await;
    let origin = Origin::text("found");
    let svc = h
        .layer(|b| {
            b.max_variants(MAX)
                .route("/search", Route::new().max_variants(3))
        })
        .layer(origin.service());

    for i in 0..5 * MAX {
        let reply = send(&svc, get(&format!("/p?r={i}"))).await;
        assert_eq!(reply.text(), "found");
        if i < MAX {
            assert_eq!(reply.cache_status(), STORED, "variant {i}");
            h.store.wait_puts(i + 1).await;
        } else {
            assert_eq!(
                reply.cache_status(),
                miss("too-many-variants"),
                "variant {i}"
            );
        }
    }
    assert_eq!(
        h.store.puts_finished_for("/p"),
        MAX,
        "only the bound's worth stored"
    );
    if let Some(redis) = &h.redis {
        let client = support::fred_client(&redis.url()).await;
        let fields = support::cached_fields(&client, &format!("{}{{/p}}", h.prefix)).await;
        assert_eq!(
            fields.len(),
            MAX,
            "fields of the resource's hash: {fields:?}"
        );
    }
    let calls = origin.calls();
    for i in 0..MAX {
        assert_hit(&send(&svc, get(&format!("/p?r={i}"))).await);
    }
    assert_eq!(origin.calls(), calls, "the stored variants keep hitting");

    for i in 0..5 {
        let reply = send(&svc, get(&format!("/search?q={i}"))).await;
        if i < 3 {
            assert_eq!(reply.cache_status(), STORED, "query {i}");
            h.store.wait_puts(MAX + i + 1).await;
        } else {
            assert_eq!(reply.cache_status(), miss("too-many-variants"), "query {i}");
        }
    }

    // A write purges the resource, and its room comes back.
    let write = send(&svc, request(Method::POST, "/p", &[])).await;
    assert_eq!(write.cache_status(), format!("{METHOD}; purged={MAX}"));
    for i in 0..MAX {
        let reply = send(&svc, get(&format!("/p?fresh={i}"))).await;
        assert_eq!(reply.cache_status(), STORED, "after the purge, variant {i}");
        h.store.wait_puts(MAX + 3 + i + 1).await;
    }
    assert_eq!(
        send(&svc, get("/p?fresh=last")).await.cache_status(),
        miss("too-many-variants")
    );
}
