//! HTTP's own caching rules (RFC 9111, 5861, 9213), on both stores: a
//! response's `Age` counts, revalidation directives forbid stale serving,
//! a response's own stale windows, freshness taken from the origin,
//! targeted cache-control fields, conditional revalidation and `Vary`.
//!
//! Entries here live for a second or so: the waits past a TTL are for a
//! time to pass, never for an event.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderName, Method, Response, StatusCode};
use tokio::sync::Notify;
use tower::Layer;
use tower_cache_aside::{Freshness, Route};

use support::{assert_hit, get, miss, request, send, Backend, Origin, TestBody, STORED};

suite!(
    a_response_s_age_counts_and_a_too_old_one_is_not_stored,
    revalidation_directives_forbid_serving_stale_on_error,
    must_revalidate_is_never_served_while_revalidating,
    a_response_s_own_stale_window_is_honoured_when_enabled,
    a_stale_if_error_window_is_judged_after_a_slow_origin,
    explicit_freshness_stores_only_what_the_origin_says,
    heuristic_freshness_is_a_tenth_of_the_last_modified_age,
    a_targeted_field_overrides_cache_control,
    a_304_refreshes_the_stored_headers_and_freshness_and_serves_the_stored_body,
    a_changed_resource_replaces_the_kept_entry,
    no_cache_responses_are_revalidated_before_every_use,
    without_a_revalidation_window_stale_entries_are_fetched_whole,
    a_background_refresh_asks_whether_the_entry_changed,
    vary_stores_a_variant_per_value_and_serves_each_its_own,
    vary_variants_are_found_by_another_instance_and_by_head,
    vary_values_are_normalised_and_vary_star_is_never_stored,
    a_resource_that_stops_varying_is_stored_whole_again,
    the_variants_of_a_resource_are_bounded,
    a_purge_during_a_varied_fill_keeps_its_answer_out,
    waiters_follow_a_fill_stored_under_another_variant,
);

/// An origin with validators: version `v` of its one resource has the
/// `ETag` `"v<v>"` and the fields `extra`; a request whose `If-None-Match`
/// names the current version gets a 304 with `not_modified` fields.
struct Validating {
    origin: Origin,
    version: Arc<AtomicUsize>,
    conditions: Arc<Mutex<Vec<Option<String>>>>,
}

fn validating(
    extra: &'static [(&'static str, &'static str)],
    not_modified: &'static [(&'static str, &'static str)],
) -> Validating {
    let version = Arc::new(AtomicUsize::new(1));
    let conditions = Arc::new(Mutex::new(Vec::new()));
    let origin = {
        let (version, conditions) = (version.clone(), conditions.clone());
        Origin::new(move |req| {
            let v = version.load(Ordering::SeqCst);
            let etag = format!("\"v{v}\"");
            let condition = req
                .headers()
                .get("if-none-match")
                .map(|c| c.to_str().unwrap().to_owned());
            conditions.lock().unwrap().push(condition.clone());
            if condition.as_deref() == Some(etag.as_str()) {
                let mut response = Response::builder().status(StatusCode::NOT_MODIFIED);
                for (name, value) in not_modified {
                    response = response.header(*name, *value);
                }
                return response
                    .header("etag", etag)
                    .body(TestBody::full(""))
                    .unwrap();
            }
            let mut response = Response::builder().header("etag", etag);
            for (name, value) in extra {
                response = response.header(*name, *value);
            }
            response.body(TestBody::full(format!("body v{v}"))).unwrap()
        })
    };
    Validating {
        origin,
        version,
        conditions,
    }
}

impl Validating {
    fn conditions(&self) -> Vec<Option<String>> {
        self.conditions.lock().unwrap().clone()
    }
}

const REVALIDATED: &str = "tower-cache-aside; fwd=stale; fwd-status=304; ttl=";

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
        "short-stale-if-error" => cc("max-age=1, stale-if-error=2"),
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
    // But an entry carries the windows it was stored with: the plain
    // layer serves the honouring layer's entry stale too.
    let reply = send(&plain, get(path)).await;
    assert!(reply.is_stale_hit(), "{}", reply.cache_status());
}

async fn a_stale_if_error_window_is_judged_after_a_slow_origin(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let down = Arc::new(AtomicBool::new(false));
    let origin = origin(down.clone());
    let slow_when_down = {
        let (down, inner) = (down.clone(), origin.service());
        tower::service_fn(move |req| {
            let (down, mut inner) = (down.load(Ordering::SeqCst), inner.clone());
            async move {
                if down {
                    // Longer than the 2 s the response allows.
                    tokio::time::sleep(Duration::from_millis(2_500)).await;
                }
                tower::Service::call(&mut inner, req).await
            }
        })
    };
    let svc = h
        .layer(|b| b.stale_if_error(Duration::from_secs(60)))
        .layer(slow_when_down);

    let path = "/short-stale-if-error";
    assert_eq!(send(&svc, get(path)).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(Duration::from_secs(1)).await;
    down.store(true, Ordering::SeqCst);
    // Within its window when looked up, past it once the origin failed.
    let reply = send(&svc, get(path)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "down");
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

async fn a_304_refreshes_the_stored_headers_and_freshness_and_serves_the_stored_body(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let server = validating(
        &[
            ("cache-control", "max-age=1"),
            ("x-generation", "1"),
            ("x-kept", "yes"),
        ],
        &[("cache-control", "max-age=30"), ("x-generation", "2")],
    );
    let svc = h
        .layer(|b| b.revalidation_window(Duration::from_secs(60)))
        .layer(server.origin.service());

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(Duration::from_secs(1)).await;

    // Stale: the origin is asked with the stored ETag, says 304, and the
    // stored body is served with the 304's fields.
    let reply = send(&svc, get("/doc")).await;
    let status = reply.cache_status();
    assert!(
        status.starts_with(REVALIDATED) && status.ends_with("; stored"),
        "{status}"
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "body v1");
    assert_eq!(reply.header("x-generation"), Some("2"));
    assert_eq!(reply.header("x-kept"), Some("yes"));
    assert_eq!(reply.header("cache-control"), Some("max-age=30"));
    assert_eq!(reply.header("content-length"), Some("7"));
    assert_eq!(server.origin.calls(), 2);
    assert_eq!(server.conditions(), [None, Some("\"v1\"".to_owned())]);

    // Stored again with the 304's freshness: hits, one origin call in all.
    h.store.wait_puts(2).await;
    let hit = send(&svc, get("/doc")).await;
    let ttl = assert_hit(&hit);
    assert!((28..=30).contains(&ttl), "ttl {ttl}");
    assert_eq!(hit.text(), "body v1");
    assert_eq!(hit.header("x-generation"), Some("2"));
    assert_eq!(server.origin.calls(), 2);

    // A client's own condition is answered by the layer.
    let conditional = request(Method::GET, "/doc", &[("if-none-match", "\"v1\"")]);
    assert_eq!(
        send(&svc, conditional).await.status,
        StatusCode::NOT_MODIFIED
    );
}

async fn a_changed_resource_replaces_the_kept_entry(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let server = validating(&[("cache-control", "max-age=1")], &[]);
    let svc = h
        .layer(|b| b.revalidation_window(Duration::from_secs(60)))
        .layer(server.origin.service());

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(Duration::from_secs(1)).await;
    server.version.store(2, Ordering::SeqCst);

    // The client's own condition names the old version: it is replaced by
    // the layer's, and the client gets the new body.
    let conditional = request(Method::GET, "/doc", &[("if-none-match", "\"v0\"")]);
    let reply = send(&svc, conditional).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.text(), "body v2");
    assert_eq!(server.conditions()[1].as_deref(), Some("\"v1\""));
    h.store.wait_puts(2).await;
    let hit = send(&svc, get("/doc")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "body v2");
    assert_eq!(server.origin.calls(), 2);
}

async fn no_cache_responses_are_revalidated_before_every_use(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let server = validating(&[("cache-control", "no-cache")], &[]);
    let svc = h
        .layer(|b| {
            b.revalidation_window(Duration::from_secs(60))
                .stale_if_error(Duration::from_secs(60))
        })
        .layer(server.origin.service());

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    // Never served without asking, however new: each use is a 304 round.
    for round in 0..3 {
        let reply = send(&svc, get("/doc")).await;
        assert!(
            reply.cache_status().starts_with(REVALIDATED),
            "{}",
            reply.cache_status()
        );
        assert_eq!(reply.text(), "body v1");
        assert_eq!(server.origin.calls(), 2 + round);
        h.store.wait_puts(2 + round).await;
    }
    assert!(server.conditions()[1..]
        .iter()
        .all(|c| c.as_deref() == Some("\"v1\"")));
    // Without a validator it is not stored at all.
    let plain = h
        .layer(|b| b.revalidation_window(Duration::from_secs(60)))
        .layer(
            Origin::new(|_| {
                Response::builder()
                    .header("cache-control", "no-cache")
                    .body(TestBody::full("x"))
                    .unwrap()
            })
            .service(),
        );
    assert_eq!(
        send(&plain, get("/other")).await.cache_status(),
        miss("no-cache")
    );
}

async fn without_a_revalidation_window_stale_entries_are_fetched_whole(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let server = validating(&[("cache-control", "max-age=1")], &[]);
    let svc = h.layer(|b| b).layer(server.origin.service());

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(Duration::from_secs(1)).await;
    let reply = send(&svc, get("/doc")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(server.conditions(), [None, None]);
    // And no-cache is not stored.
    let svc = h.layer(|b| b).layer(
        validating(&[("cache-control", "no-cache")], &[])
            .origin
            .service(),
    );
    assert_eq!(
        send(&svc, get("/nc")).await.cache_status(),
        miss("no-cache")
    );
}

async fn a_background_refresh_asks_whether_the_entry_changed(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let server = validating(
        &[("cache-control", "max-age=1")],
        &[("cache-control", "max-age=30")],
    );
    let svc = h
        .layer(|b| b.stale_while_revalidate(Duration::from_secs(30)))
        .layer(server.origin.service());

    assert_eq!(send(&svc, get("/doc")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(Duration::from_secs(1)).await;

    // Served stale at once; the refresh behind it sends the stored ETag,
    // gets a 304, and stores the entry again with the 304's freshness.
    let stale = send(&svc, get("/doc")).await;
    assert!(stale.is_stale_hit(), "{}", stale.cache_status());
    h.store.wait_puts(2).await;
    assert_eq!(server.conditions(), [None, Some("\"v1\"".to_owned())]);
    let hit = send(&svc, get("/doc")).await;
    let ttl = assert_hit(&hit);
    assert!((28..=30).contains(&ttl), "ttl {ttl}");
    assert_eq!(hit.text(), "body v1");
    assert_eq!(server.origin.calls(), 2);

    // Without validators, the refresh is a plain GET: the client's own
    // condition, which would get a 304 there is nothing to store from, is
    // not passed on.
    let conditions = Arc::new(Mutex::new(Vec::new()));
    let plain = {
        let conditions = conditions.clone();
        Origin::new(move |req| {
            let condition = req.headers().get("if-none-match").cloned();
            conditions.lock().unwrap().push(condition);
            Response::builder()
                .header("cache-control", "max-age=1")
                .body(TestBody::full("plain"))
                .unwrap()
        })
    };
    let svc = h
        .layer(|b| b.stale_while_revalidate(Duration::from_secs(30)))
        .layer(plain.service());
    assert_eq!(send(&svc, get("/plain")).await.cache_status(), STORED);
    h.store.wait_puts(3).await;
    outlive(Duration::from_secs(1)).await;
    let conditional = request(Method::GET, "/plain", &[("if-none-match", "\"x\"")]);
    assert!(send(&svc, conditional).await.is_stale_hit());
    h.store.wait_puts(4).await;
    assert_eq!(*conditions.lock().unwrap(), [None, None]);
    assert_eq!(h.store.stats().puts_ok, 4, "the refresh was stored");
}

/// An origin whose `/greeting` varies on `Accept-Language` (and `Origin`
/// when `also_origin`), `/encoded` on `Accept-Encoding`, `/star` on `*`,
/// and `/switch` on `Accept-Language` while `varies` is set; each body
/// says which request it answered.
fn varying(varies: Arc<AtomicBool>) -> Origin {
    Origin::new(move |req| {
        let value = |name: &str| {
            req.headers()
                .get(name)
                .map_or("-", |v| v.to_str().unwrap())
                .to_owned()
        };
        let path = req.uri().path().to_owned();
        let (vary, body) = match path.as_str() {
            "/greeting" => match value("accept-language").as_str() {
                "fr" => (Some("Accept-Language"), "bonjour".to_owned()),
                "de" => (Some("Accept-Language"), "hallo".to_owned()),
                _ => (Some("Accept-Language"), "hello".to_owned()),
            },
            "/encoded" => (Some("accept-encoding"), value("accept-encoding")),
            "/star" => (Some("*"), "any".to_owned()),
            "/switch" if varies.load(Ordering::SeqCst) => (
                Some("Accept-Language"),
                format!("for {}", value("accept-language")),
            ),
            "/switch" => (None, "for all".to_owned()),
            other => panic!("no case {other}"),
        };
        let mut response = Response::builder().header("cache-control", "max-age=1");
        if let Some(vary) = vary {
            response = response.header("vary", vary);
        }
        response.body(TestBody::full(body)).unwrap()
    })
}

fn in_language(path: &str, language: &str) -> http::Request<()> {
    request(Method::GET, path, &[("accept-language", language)])
}

async fn vary_stores_a_variant_per_value_and_serves_each_its_own(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = varying(Arc::new(AtomicBool::new(true)));
    // No `vary_by`: the response's `Vary` is enough.
    let svc = h.layer(|b| b).layer(origin.service());

    let languages = [("en", "hello"), ("fr", "bonjour")];
    for (language, _) in languages {
        let reply = send(&svc, in_language("/greeting", language)).await;
        assert_eq!(reply.cache_status(), STORED, "{language}");
    }
    h.store.wait_puts(2).await;
    for (language, text) in languages {
        let reply = send(&svc, in_language("/greeting", language)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), text, "{language}");
        assert_eq!(reply.header("vary"), Some("Accept-Language"));
    }
    // A request without the field is a variant of its own.
    assert_eq!(send(&svc, get("/greeting")).await.cache_status(), STORED);
    h.store.wait_puts(3).await;
    assert_eq!(send(&svc, get("/greeting")).await.text(), "hello");
    assert!(send(&svc, get("/greeting")).await.is_hit());
    assert_eq!(origin.calls_for("/greeting"), 3);

    // A write purges every variant (the record is not counted as one).
    support::assert_write_purges(&svc, "/greeting", 3).await;
    for (language, text) in languages {
        let reply = send(&svc, in_language("/greeting", language)).await;
        assert_eq!(reply.cache_status(), STORED, "{language} after the purge");
        assert_eq!(reply.text(), text);
    }
}

async fn vary_variants_are_found_by_another_instance_and_by_head(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = varying(Arc::new(AtomicBool::new(true)));
    let first = h.layer(|b| b).layer(origin.service());
    for language in ["en", "fr"] {
        let reply = send(&first, in_language("/greeting", language)).await;
        assert_eq!(reply.cache_status(), STORED);
    }
    h.store.wait_puts(2).await;

    // Another instance (a layer that has seen nothing) finds the
    // resource's vary record and then the request's variant.
    let second = h.layer(|b| b).layer(origin.service());
    let reply = send(&second, in_language("/greeting", "fr")).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "bonjour");
    let third = h.layer(|b| b).layer(origin.service());
    let head = request(Method::HEAD, "/greeting", &[("accept-language", "en")]);
    let reply = send(&third, head).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "");
    // A language nobody asked for yet is a miss of its own variant, stored.
    let reply = send(&third, in_language("/greeting", "de")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.text(), "hallo");
    assert_eq!(origin.calls_for("/greeting"), 3);
}

async fn vary_values_are_normalised_and_vary_star_is_never_stored(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = varying(Arc::new(AtomicBool::new(true)));
    let svc = h.layer(|b| b).layer(origin.service());
    let encoded = |value: &str| request(Method::GET, "/encoded", &[("accept-encoding", value)]);

    assert_eq!(send(&svc, encoded("gzip, br")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    // The same list, spelled otherwise: the same variant.
    let reply = send(&svc, encoded("GZIP,br")).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "gzip, br");
    // Another list: another variant.
    assert_eq!(send(&svc, encoded("br")).await.cache_status(), STORED);
    assert_eq!(origin.calls_for("/encoded"), 2);

    assert_eq!(send(&svc, get("/star")).await.cache_status(), miss("vary"));
    assert_not_stored(&send(&svc, get("/star")).await);
    assert_eq!(origin.calls_for("/star"), 2);
}

async fn a_resource_that_stops_varying_is_stored_whole_again(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let varies = Arc::new(AtomicBool::new(true));
    let origin = varying(varies.clone());
    let svc = h.layer(|b| b).layer(origin.service());

    assert_eq!(
        send(&svc, in_language("/switch", "fr"))
            .await
            .cache_status(),
        STORED
    );
    h.store.wait_puts(1).await;
    assert_eq!(
        send(&svc, in_language("/switch", "fr")).await.text(),
        "for fr"
    );
    outlive(Duration::from_secs(1)).await;

    // The origin no longer varies: the layer looks under the variant it
    // knew, and stores the answer for every request.
    varies.store(false, Ordering::SeqCst);
    let reply = send(&svc, in_language("/switch", "fr")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.text(), "for all");
    h.store.wait_puts(2).await;
    for language in ["fr", "de"] {
        let reply = send(&svc, in_language("/switch", language)).await;
        assert_hit(&reply);
        assert_eq!(reply.text(), "for all");
    }
    let other = h.layer(|b| b).layer(origin.service());
    let reply = send(&other, in_language("/switch", "en")).await;
    assert_hit(&reply);
    assert_eq!(origin.calls_for("/switch"), 2);

    // And back: it varies again, under the base variant's lease.
    outlive(Duration::from_secs(1)).await;
    varies.store(true, Ordering::SeqCst);
    let reply = send(&other, in_language("/switch", "en")).await;
    assert_eq!(reply.cache_status(), STORED);
    h.store.wait_puts(3).await;
    let reply = send(&svc, in_language("/switch", "en")).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), "for en");
    assert_eq!(
        send(&svc, in_language("/switch", "de"))
            .await
            .cache_status(),
        STORED
    );
}

async fn the_variants_of_a_resource_are_bounded(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = varying(Arc::new(AtomicBool::new(true)));
    // Three entries: two variants and the resource's vary record.
    let svc = h.layer(|b| b.max_variants(3)).layer(origin.service());
    for language in ["en", "fr"] {
        let reply = send(&svc, in_language("/greeting", language)).await;
        assert_eq!(reply.cache_status(), STORED);
        h.store.wait_puts_for("/greeting", 1).await;
    }
    h.store.wait_puts(2).await;
    let reply = send(&svc, in_language("/greeting", "de")).await;
    assert_eq!(reply.cache_status(), miss("too-many-variants"));
    assert_eq!(reply.text(), "hallo");
    assert!(send(&svc, in_language("/greeting", "fr")).await.is_hit());

    // A fill that would pass the bound with its variant and its record
    // (another host's URL: a base variant of its own) writes nothing.
    let encoded = |host: &str| {
        let headers = [("accept-encoding", "gzip"), ("host", host)];
        request(Method::GET, "/encoded", &headers)
    };
    assert_eq!(send(&svc, encoded("a.test")).await.cache_status(), STORED);
    h.store.wait_puts_for("/encoded", 1).await;
    let ok = h.store.stats().puts_ok;
    for round in 2..=3 {
        assert_eq!(send(&svc, encoded("b.test")).await.text(), "gzip");
        h.store.wait_puts_for("/encoded", round).await;
    }
    assert_eq!(h.store.stats().puts_ok, ok, "b.test's fills wrote nothing");
    assert!(send(&svc, encoded("a.test")).await.is_hit());
    assert_eq!(origin.calls_for("/encoded"), 3);
}

/// Holds the answer of the first GET sent once armed: `entered` is
/// notified once it is made, and it goes out when `proceed` is.
struct Gate {
    armed: Arc<AtomicBool>,
    entered: Arc<Notify>,
    proceed: Arc<Notify>,
}

fn gate<S>(
    inner: S,
    armed: bool,
) -> (
    impl tower::Service<
            http::Request<()>,
            Response = S::Response,
            Error = S::Error,
            Future = impl Send,
        > + Clone,
    Gate,
)
where
    S: tower::Service<http::Request<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
{
    let gate = Gate {
        armed: Arc::new(AtomicBool::new(armed)),
        entered: Arc::new(Notify::new()),
        proceed: Arc::new(Notify::new()),
    };
    let service = {
        let (armed, entered, proceed) = (
            gate.armed.clone(),
            gate.entered.clone(),
            gate.proceed.clone(),
        );
        tower::service_fn(move |req: http::Request<()>| {
            let held = req.method() == Method::GET && armed.swap(false, Ordering::SeqCst);
            let (entered, proceed, mut inner) = (entered.clone(), proceed.clone(), inner.clone());
            async move {
                let response = tower::Service::call(&mut inner, req).await;
                if held {
                    entered.notify_one();
                    proceed.notified().await;
                }
                response
            }
        })
    };
    (service, gate)
}

impl Gate {
    /// Waits until the held GET's answer is made.
    async fn entered(&self) {
        tokio::time::timeout(support::SIGNAL_TIMEOUT, self.entered.notified())
            .await
            .expect("the held GET reaches the origin");
    }
}

async fn a_purge_during_a_varied_fill_keeps_its_answer_out(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let version = Arc::new(AtomicUsize::new(1));
    let origin = {
        let version = version.clone();
        Origin::new(move |req| {
            if req.method() != Method::GET {
                version.fetch_add(1, Ordering::SeqCst);
                return Response::new(TestBody::full("wrote"));
            }
            let v = version.load(Ordering::SeqCst);
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("vary", "accept-language")
                .body(TestBody::full(format!("v{v}")))
                .unwrap()
        })
    };
    // The first GET's answer is made, then held until the write is done.
    let (gated, gate) = gate(origin.service(), true);
    let svc = h.layer(|b| b).layer(gated);

    // Its lease is on the URL's base variant; its answer goes under the
    // `fr` variant: the purge in between must still keep it out.
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, in_language("/doc", "fr")).await }
    });
    gate.entered().await;
    support::assert_write_purges(&svc, "/doc", 0).await;
    gate.proceed.notify_one();
    assert_eq!(first.await.unwrap().text(), "v1");
    let stats = h
        .store
        .wait_until("the fill", |s| s.puts_finished() >= 1)
        .await;
    assert_eq!(
        (stats.puts_ok, stats.puts_failed),
        (0, 1),
        "the fill lost its lease"
    );

    let reply = send(&svc, in_language("/doc", "fr")).await;
    assert_eq!(reply.cache_status(), STORED);
    assert_eq!(reply.text(), "v2");
    h.store.wait_until("the refill", |s| s.puts_ok >= 1).await;
    let hit = send(&svc, in_language("/doc", "fr")).await;
    assert_hit(&hit);
    assert_eq!(hit.text(), "v2");
}

async fn waiters_follow_a_fill_stored_under_another_variant(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let varies = Arc::new(AtomicBool::new(true));
    let origin = varying(varies.clone());
    let (gated, gate) = gate(origin.service(), false);
    let svc = h.layer(|b| b).layer(gated);
    // The layer learns that /switch varies on Accept-Language; a purge
    // then empties the resource, and the origin stops varying.
    assert_eq!(
        send(&svc, in_language("/switch", "fr")).await.text(),
        "for fr"
    );
    h.store.wait_puts(1).await;
    support::assert_write_purges(&svc, "/switch", 1).await;
    varies.store(false, Ordering::SeqCst);

    // Two requests for the variant the layer knows: the first takes its
    // lease and gets an answer for every request, the second waits.
    gate.armed.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, in_language("/switch", "fr")).await }
    });
    gate.entered().await;
    let looked_up = h.store.stats().gets;
    let second = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, in_language("/switch", "fr")).await }
    });
    h.store
        .wait_until("the second waits", |s| s.gets > looked_up)
        .await;
    gate.proceed.notify_one();
    assert_eq!(first.await.unwrap().cache_status(), STORED);

    // The fill went under the base variant: the waiter finds it there
    // instead of calling the origin itself.
    let second = second.await.unwrap();
    assert_hit(&second);
    assert_eq!(second.text(), "for all");
    assert_eq!(
        origin.calls_for("/switch"),
        3,
        "GET, PUT, and the first GET"
    );
}
