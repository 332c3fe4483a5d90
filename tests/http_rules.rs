//! HTTP's own caching rules (RFC 9111, 5861, 9213), on both stores: a
//! response's `Age` counts, revalidation directives forbid stale serving,
//! a response's own stale windows, freshness taken from the origin, and
//! targeted cache-control fields.
//!
//! Entries here live for a second or so: the waits past a TTL are for a
//! time to pass, never for an event.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, Response, StatusCode};
use tower::Layer;
use tower_cache_aside::{Freshness, Route};

use support::{assert_hit, get, miss, request, send, Backend, Origin, TestBody, STORED};

suite!(
    a_response_s_age_counts_and_a_too_old_one_is_not_stored,
    revalidation_directives_forbid_serving_stale_on_error,
    must_revalidate_is_never_served_while_revalidating,
    a_response_s_own_stale_window_is_honoured_when_enabled,
    explicit_freshness_stores_only_what_the_origin_says,
    heuristic_freshness_is_a_tenth_of_the_last_modified_age,
    a_targeted_field_overrides_cache_control,
);

/// An HTTP date `secs` seconds ago.
fn ago(secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(secs))
}

/// An origin that answers each path with the fields the path names
/// (`/<case>`, see `fields`), or 503 once `down` is set.
fn origin(down: Arc<AtomicBool>) -> Origin {
    Origin::new(move |req| {
        if down.load(Ordering::SeqCst) {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(TestBody::full("down"))
                .unwrap();
        }
        let path = req.uri().path();
        let case = path.rsplit('/').next().unwrap_or_default();
        let mut response = Response::builder();
        for (name, value) in fields(case) {
            response = response.header(name, value);
        }
        let status = if case == "error-with-max-age" {
            500
        } else {
            200
        };
        response
            .status(status)
            .body(TestBody::full(format!("good {path}")))
            .unwrap()
    })
}

fn fields(case: &str) -> Vec<(&'static str, String)> {
    let cc = |value: &str| vec![("cache-control", value.to_owned())];
    match case {
        "plain" => vec![],
        "age-50" => vec![("cache-control", "max-age=60".into()), ("age", "50".into())],
        "too-old" => vec![("cache-control", "max-age=60".into()), ("age", "60".into())],
        "dated-too-old" => vec![("cache-control", "max-age=60".into()), ("date", ago(90))],
        "one-second" => cc("max-age=1"),
        "must-revalidate" => cc("max-age=1, must-revalidate"),
        "proxy-revalidate" => cc("max-age=1, proxy-revalidate"),
        "s-maxage" => cc("s-maxage=1"),
        "no-stale-if-error" => cc("max-age=1, stale-if-error=0"),
        "own-stale-if-error" => cc("max-age=1, stale-if-error=30"),
        "error-with-max-age" => cc("max-age=30"),
        "modified" => vec![("last-modified", ago(1000)), ("date", ago(0))],
        "targeted" => vec![
            ("cache-control", "no-store".into()),
            ("tower-cache-control", "max-age=30".into()),
        ],
        "cdn-no-store" => vec![
            ("cache-control", "max-age=60".into()),
            ("cdn-cache-control", "no-store".into()),
        ],
        "invalid-targeted" => vec![
            ("cache-control", "max-age=20".into()),
            ("tower-cache-control", "Max-Age=5".into()),
        ],
        other => panic!("no case {other}"),
    }
}

/// Sleeps a little past `d` (waiting for a TTL to pass, not for a signal).
async fn outlive(d: Duration) {
    tokio::time::sleep(d + Duration::from_millis(200)).await;
}

/// A miss that was not stored (its detail may be the lease's, when the
/// miss before it released one).
fn assert_not_stored(reply: &support::Reply) {
    let status = reply.cache_status();
    assert!(
        status.starts_with("tower-cache-aside; fwd=miss") && !status.contains("stored"),
        "{status}"
    );
}

fn age_of(reply: &support::Reply) -> u64 {
    reply
        .header("age")
        .expect("Age")
        .parse()
        .expect("Age in seconds")
}

async fn a_response_s_age_counts_and_a_too_old_one_is_not_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let down = Arc::new(AtomicBool::new(false));
    let origin = origin(down);
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(send(&svc, get("/age-50")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    let hit = send(&svc, get("/age-50")).await;
    let ttl = assert_hit(&hit);
    // Stored 50 s old with a lifetime of 60 s: about 10 s left, and its
    // `Age` counts from the 50 s.
    assert!(ttl <= 10, "ttl {ttl}");
    let age = age_of(&hit);
    assert!((50..=51).contains(&age), "Age {age}");

    for too_old in ["/too-old", "/dated-too-old"] {
        let reply = send(&svc, get(too_old)).await;
        assert_eq!(reply.cache_status(), miss("expired"), "{too_old}");
        assert_eq!(reply.text(), format!("good {too_old}"));
        assert_not_stored(&send(&svc, get(too_old)).await);
        assert_eq!(origin.calls_for(too_old), 2, "{too_old} is never stored");
    }
    assert_eq!(h.store.stats().puts_finished(), 1);
}

async fn revalidation_directives_forbid_serving_stale_on_error(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let down = Arc::new(AtomicBool::new(false));
    let origin = origin(down.clone());
    let svc = h
        .layer(|b| b.stale_if_error(Duration::from_secs(30)))
        .layer(origin.service());

    let forbidding = [
        "/must-revalidate",
        "/proxy-revalidate",
        "/s-maxage",
        "/no-stale-if-error",
    ];
    let all = ["/one-second"].into_iter().chain(forbidding);
    for path in all.clone() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    h.store.wait_puts(5).await;
    for path in all.clone() {
        assert!(send(&svc, get(path)).await.is_hit(), "{path} is fresh");
    }
    outlive(Duration::from_secs(1)).await;
    down.store(true, Ordering::SeqCst);

    // The control: an entry without such a directive answers the failure.
    let reply = send(&svc, get("/one-second")).await;
    assert!(reply.is_stale_hit(), "{}", reply.cache_status());
    assert!(reply.cache_status().ends_with("detail=stale-if-error"));
    assert_eq!(reply.text(), "good /one-second");
    // The others give the origin's failure through.
    for path in forbidding {
        let reply = send(&svc, get(path)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.text(), "down", "{path}");
    }
    for path in all {
        assert_eq!(origin.calls_for(path), 2, "{path}: asked once more");
    }
}

async fn must_revalidate_is_never_served_while_revalidating(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = origin(Arc::new(AtomicBool::new(false)));
    let svc = h
        .layer(|b| b.stale_while_revalidate(Duration::from_secs(30)))
        .layer(origin.service());

    for path in ["/one-second", "/must-revalidate"] {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED);
    }
    h.store.wait_puts(2).await;
    outlive(Duration::from_secs(1)).await;

    let control = send(&svc, get("/one-second")).await;
    assert!(control.is_stale_hit(), "{}", control.cache_status());
    // Past its freshness, a must-revalidate entry waits for the origin.
    let reply = send(&svc, get("/must-revalidate")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(origin.calls_for("/must-revalidate"), 2);
}

async fn a_response_s_own_stale_window_is_honoured_when_enabled(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let down = Arc::new(AtomicBool::new(false));
    let origin = origin(down.clone());
    // The layer has no stale window; the response grants one.
    let honouring = h
        .layer(|b| b.stale_from_response(true))
        .layer(origin.service());
    let plain = h.layer(|b| b).layer(origin.service());

    let path = "/own-stale-if-error";
    // The windows are the storing layer's decision: each layer stores its
    // own entry here.
    let other = "/plain-layer/own-stale-if-error";
    assert_eq!(send(&honouring, get(path)).await.cache_status(), STORED);
    assert_eq!(send(&plain, get(other)).await.cache_status(), STORED);
    h.store.wait_puts(2).await;
    outlive(Duration::from_secs(1)).await;
    down.store(true, Ordering::SeqCst);

    let reply = send(&honouring, get(path)).await;
    assert!(reply.is_stale_hit(), "{}", reply.cache_status());
    assert_eq!(reply.text(), format!("good {path}"));
    // A layer that does not honour it sends the failure on.
    let reply = send(&plain, get(other)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn explicit_freshness_stores_only_what_the_origin_says(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = origin(Arc::new(AtomicBool::new(false)));
    let svc = h
        .layer(|b| {
            b.freshness(Freshness::Explicit)
                .ttl(Duration::from_secs(600))
        })
        .layer(origin.service());

    let reply = send(&svc, get("/plain")).await;
    assert_eq!(reply.cache_status(), miss("no-freshness"));
    assert_not_stored(&send(&svc, get("/plain")).await);
    assert_eq!(origin.calls_for("/plain"), 2);

    // Stored for what the response says is left, not the 600 s.
    assert_eq!(send(&svc, get("/age-50")).await.cache_status(), STORED);
    // Any status with explicit freshness.
    let error = send(&svc, get("/error-with-max-age")).await;
    assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error.cache_status(), STORED);
    h.store.wait_puts(2).await;
    assert!(assert_hit(&send(&svc, get("/age-50")).await) <= 10);
    let hit = send(&svc, get("/error-with-max-age")).await;
    assert_eq!(hit.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(assert_hit(&hit) <= 30);

    // The same per route, beside the layer's default way.
    let svc = h
        .layer(|b| {
            b.route(
                "/upstream/{*rest}",
                Route::new().freshness(Freshness::Explicit),
            )
        })
        .layer(origin.service());
    let reply = send(&svc, get("/upstream/plain")).await;
    assert_eq!(reply.cache_status(), miss("no-freshness"));
    let reply = send(&svc, get("/app/plain")).await;
    assert_eq!(reply.cache_status(), STORED);
}

async fn heuristic_freshness_is_a_tenth_of_the_last_modified_age(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = origin(Arc::new(AtomicBool::new(false)));
    let svc = h
        .layer(|b| {
            b.freshness(Freshness::Heuristic)
                .ttl(Duration::from_secs(600))
        })
        .layer(origin.service());

    assert_eq!(send(&svc, get("/modified")).await.cache_status(), STORED);
    let reply = send(&svc, get("/plain")).await;
    assert_eq!(reply.cache_status(), miss("no-freshness"));
    h.store.wait_puts(1).await;
    // Modified 1000 s ago: fresh for 100 s.
    let ttl = assert_hit(&send(&svc, get("/modified")).await);
    assert!((97..=100).contains(&ttl), "ttl {ttl}");
}

async fn a_targeted_field_overrides_cache_control(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = origin(Arc::new(AtomicBool::new(false)));
    let own = HeaderName::from_static("tower-cache-control");
    let cdn = HeaderName::from_static("cdn-cache-control");
    let svc = h
        .layer(|b| b.own_targeted_field(own).targeted_field(cdn))
        .layer(origin.service());

    // `Cache-Control: no-store` is for browsers; the layer's own field
    // says 30 s, and is not passed on.
    let first = send(&svc, get("/targeted")).await;
    assert_eq!(first.cache_status(), STORED);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(first.header("tower-cache-control"), None);
    h.store.wait_puts(1).await;
    let hit = send(&svc, get("/targeted")).await;
    assert!(assert_hit(&hit) <= 30);
    assert_eq!(hit.header("cache-control"), Some("no-store"));
    assert_eq!(hit.header("tower-cache-control"), None);
    assert_eq!(origin.calls_for("/targeted"), 1);

    // A field shared with other caches wins over Cache-Control too, and
    // is passed on.
    let reply = send(&svc, get("/cdn-no-store")).await;
    assert_eq!(reply.cache_status(), miss("no-store"));
    assert_eq!(reply.header("cdn-cache-control"), Some("no-store"));

    // Not a valid dictionary: Cache-Control is obeyed (20 s), and the field
    // is still the layer's alone.
    let reply = send(&svc, get("/invalid-targeted")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.header("tower-cache-control"), None);
    h.store.wait_puts(2).await;
    let hit = send(&svc, get("/invalid-targeted")).await;
    let ttl = assert_hit(&hit);
    assert!((18..=20).contains(&ttl), "ttl {ttl}");

    // Nor does a forwarded response carry it.
    let write = send(&svc, request(Method::PUT, "/targeted", &[])).await;
    assert_eq!(write.header("tower-cache-control"), None);
    assert_eq!(write.header("cache-control"), Some("no-store"));
}
