//! Purges: what a successful write removes, purge rules, globs, text from
//! requests that tries to widen a purge, the `Purger` handle, and
//! read-your-writes under concurrency.
//!
//! Written once and run against both stores, like `tests/behaviour.rs`:
//! `redis::*` over a real `redis-server` started by this binary (shared by
//! the tests running at once, each under its own key prefix), `memory::*`
//! over `MemoryStore`.
//!
//! Whether an entry is cached is probed with HEAD: a HEAD is looked up under
//! the key of the GET of the same target, and neither its hit nor its miss
//! stores anything, so probing changes nothing.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::ACCEPT_LANGUAGE;
use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};
use tower_cache_aside::http::ResponseBody;
use tower_cache_aside::{CacheAsideLayer, Error, MemoryStore};

use support::{
    request, scan_keys, send, Backend, CountingStore, Harness, Origin, TestBody, HOST, METHOD,
    MISS, STORED,
};

suite!(
    each_successful_write_purges_every_variant_of_its_path,
    failed_writes_purge_nothing,
    location_and_content_location_on_the_same_authority_are_purged,
    relative_locations_with_dot_segments_are_resolved,
    purge_rules_substitute_parameters,
    catch_all_rules_substitute_the_rest_of_the_path,
    purge_glob_purges_matching_paths_only,
    a_glob_reaches_long_paths_too,
    glob_characters_in_requests_purge_only_the_literal_resource,
    a_resource_with_many_variants_is_purged_completely,
    purger_calls_return_how_many_entries_they_removed,
);

// ---------------------------------------------------------------------------
// The origin, variants and probes
// ---------------------------------------------------------------------------

/// Any service the layer made over a [`site`].
trait Site:
    Service<Request<()>, Response = Response<ResponseBody<TestBody>>, Error = Infallible> + Clone
{
}

impl<S> Site for S where
    S: Service<Request<()>, Response = Response<ResponseBody<TestBody>>, Error = Infallible>
        + Clone
{
}

/// GET and HEAD: 200 with `Vary: Accept-Language` and a body naming the
/// host, target and language. Any other method: the status given in
/// `x-status` (200 by default), with the `Location` and `Content-Location`
/// given in `x-location` and `x-content-location`.
fn site() -> Origin {
    Origin::new(|req| {
        let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap());
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let body = if req.method() == Method::HEAD {
                String::new()
            } else {
                format!(
                    "{} {} lang={}",
                    header("host").unwrap_or(""),
                    req.uri(),
                    header("accept-language").unwrap_or("-")
                )
            };
            return Response::builder()
                .header("vary", "Accept-Language")
                .body(TestBody::full(body))
                .unwrap();
        }
        let status: u16 = header("x-status").map_or(200, |s| s.parse().unwrap());
        let mut response = Response::builder()
            .status(status)
            .header("x-origin", "write");
        if let Some(location) = header("x-location") {
            response = response.header("location", location);
        }
        if let Some(location) = header("x-content-location") {
            response = response.header("content-location", location);
        }
        response
            .body(TestBody::full(format!(
                "{} {} done",
                req.method(),
                req.uri()
            )))
            .unwrap()
    })
}

/// The layer every purge test starts from: the harness's, keyed by
/// `Accept-Language` (which [`site`] varies on).
fn site_layer(
    h: &Harness,
    configure: impl FnOnce(tower_cache_aside::Builder) -> tower_cache_aside::Builder,
) -> CacheAsideLayer {
    h.layer(|b| configure(b.vary_by(ACCEPT_LANGUAGE)))
}

/// One cached variant: a request target, a host and a language.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variant {
    target: String,
    host: &'static str,
    lang: Option<&'static str>,
}

impl Variant {
    fn new(target: impl Into<String>) -> Variant {
        Variant {
            target: target.into(),
            host: HOST,
            lang: None,
        }
    }

    fn request(&self, method: Method) -> Request<()> {
        let mut headers = vec![("host", self.host)];
        if let Some(lang) = self.lang {
            headers.push(("accept-language", lang));
        }
        request(method, &self.target, &headers)
    }
}

/// Every combination of targets, hosts and languages.
fn variants(
    targets: &[&str],
    hosts: &[&'static str],
    langs: &[Option<&'static str>],
) -> Vec<Variant> {
    let mut all = Vec::new();
    for target in targets {
        for host in hosts {
            for lang in langs {
                all.push(Variant {
                    target: (*target).to_owned(),
                    host,
                    lang: *lang,
                });
            }
        }
    }
    all
}

/// Each target at the test host, with and without a query.
fn two_each(targets: &[&str]) -> Vec<Variant> {
    targets
        .iter()
        .flat_map(|t| [Variant::new(*t), Variant::new(format!("{t}?q=1"))])
        .collect()
}

/// GETs every variant (each must be a stored miss) and waits for all the
/// writes, which must all succeed.
async fn store_all<S: Site>(h: &Harness, svc: &S, variants: &[Variant]) {
    let before = h.store.stats();
    for v in variants {
        let reply = send(svc, v.request(Method::GET)).await;
        assert_eq!(reply.status, StatusCode::OK, "{v:?}");
        assert_eq!(reply.cache_status(), STORED, "{v:?}");
    }
    let n = variants.len();
    let after = h
        .store
        .wait_until(&format!("{n} more puts"), |s| {
            s.puts_finished() >= before.puts_finished() + n
        })
        .await;
    assert_eq!(
        after.puts_ok,
        before.puts_ok + n,
        "every write succeeded: {after:?}"
    );
}

/// Whether the GET entry of `v` would be served: a HEAD probe, which stores
/// nothing either way.
async fn is_cached<S: Site>(svc: &S, v: &Variant) -> bool {
    let reply = send(svc, v.request(Method::HEAD)).await;
    if reply.is_hit() {
        return true;
    }
    assert_eq!(reply.cache_status(), MISS, "{v:?}: a plain miss");
    false
}

async fn assert_cached<S: Site>(svc: &S, variants: &[Variant], why: &str) {
    for v in variants {
        assert!(
            is_cached(svc, v).await,
            "{why}: {v:?} should still be a hit"
        );
    }
}

async fn assert_purged<S: Site>(svc: &S, variants: &[Variant], why: &str) {
    for v in variants {
        assert!(!is_cached(svc, v).await, "{why}: {v:?} should be purged");
    }
}

/// `Cache-Status` of a successful write that purged `n` entries.
fn purged(n: usize) -> String {
    format!("{METHOD}; purged={n}")
}

// ---------------------------------------------------------------------------
// 1. The default purges of a write
// ---------------------------------------------------------------------------

async fn each_successful_write_purges_every_variant_of_its_path(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let svc = site_layer(&h, |b| b).layer(origin.service());

    // 3 queries x 3 hosts x 3 languages: 27 variants of /users/1.
    let own = variants(
        &["/users/1", "/users/1?page=2", "/users/1?b=1&a=2"],
        &["a.example", "b.example", "c.example"],
        &[None, Some("en"), Some("fr")],
    );
    assert_eq!(own.len(), 27);
    // Paths next to it, which no write below names.
    let neighbours = variants(
        &[
            "/users/10",
            "/users",
            "/users/",
            "/users/1/",
            "/users/1/posts",
        ],
        &["a.example"],
        &[None, Some("en")],
    );
    store_all(&h, &svc, &neighbours).await;

    let cases = [
        (Method::POST, 200u16),
        (Method::POST, 201),
        (Method::PUT, 200),
        (Method::PUT, 204),
        (Method::PATCH, 200),
        (Method::PATCH, 302),
        (Method::DELETE, 204),
        (Method::DELETE, 303),
    ];
    let hosts = ["a.example", "b.example", "c.example", "elsewhere.example"];
    for (i, (method, status)) in cases.into_iter().enumerate() {
        let case = format!("{method} answered {status}");
        store_all(&h, &svc, &own).await;
        assert_cached(&svc, &own, &case).await;

        // The write's own host and query do not narrow the purge.
        let target = if i % 2 == 0 {
            "/users/1"
        } else {
            "/users/1?page=9"
        };
        let status_text = status.to_string();
        let mut headers = vec![("host", hosts[i % hosts.len()]), ("x-status", &status_text)];
        if (300..400).contains(&status) {
            // Purged too, but never cached: it adds nothing to the count.
            headers.push(("x-location", "/somewhere-else"));
        }
        let calls = origin.calls_for("/users/1");
        let reply = send(&svc, request(method.clone(), target, &headers)).await;
        assert_eq!(reply.status.as_u16(), status, "{case}");
        assert_eq!(reply.text(), format!("{method} {target} done"), "{case}");
        assert_eq!(reply.header("x-origin"), Some("write"), "{case}");
        assert_eq!(reply.cache_status(), purged(own.len()), "{case}");
        assert_eq!(origin.calls_for("/users/1"), calls + 1, "{case}");

        assert_purged(&svc, &own, &case).await;
        assert_cached(&svc, &neighbours, &case).await;
    }

    // After a purge, a GET goes to the origin again.
    let calls = origin.calls_for("/users/1");
    let chosen = own
        .iter()
        .find(|v| v.target == "/users/1?page=2" && v.host == "a.example" && v.lang == Some("en"))
        .expect("one of the variants");
    let again = send(&svc, chosen.request(Method::GET)).await;
    assert_eq!(again.cache_status(), STORED);
    assert_eq!(again.text(), "a.example /users/1?page=2 lang=en");
    assert_eq!(origin.calls_for("/users/1"), calls + 1);
}

async fn failed_writes_purge_nothing(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let svc = site_layer(&h, |b| b).layer(origin.service());

    let own = variants(
        &["/users/1", "/users/1?page=2"],
        &["a.example", "b.example"],
        &[None, Some("en")],
    );
    let located = two_each(&["/users/2"]);
    store_all(&h, &svc, &own).await;
    store_all(&h, &svc, &located).await;

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        for status in [400u16, 404, 409, 422, 500, 503] {
            let case = format!("{method} answered {status}");
            let purges = h.store.stats().purges;
            let status_text = status.to_string();
            let headers = [
                ("x-status", status_text.as_str()),
                ("x-location", "/users/2"),
                ("x-content-location", "/users/2"),
            ];
            let reply = send(&svc, request(method.clone(), "/users/1", &headers)).await;
            assert_eq!(reply.status.as_u16(), status, "{case}");
            assert_eq!(reply.text(), format!("{method} /users/1 done"), "{case}");
            assert_eq!(reply.header("location"), Some("/users/2"), "{case}");
            assert_eq!(reply.cache_status(), METHOD, "{case}");
            assert_eq!(
                h.store.stats().purges,
                purges,
                "{case}: no purge is even tried"
            );
        }
    }
    assert_cached(&svc, &own, "after failed writes").await;
    assert_cached(&svc, &located, "after failed writes").await;
    assert_eq!(origin.calls_for("/users/1"), own.len() + 4 * 6);
}

/// One write whose response names other paths: what it must purge (besides
/// its own path) and what it must leave.
struct LocationCase {
    method: Method,
    target: &'static str,
    location: Option<&'static str>,
    content_location: Option<&'static str>,
    status: u16,
    purges: &'static [&'static str],
    keeps: &'static [&'static str],
}

async fn run_location_cases(backend: Backend, name: &str, cases: &[LocationCase]) {
    let h = backend.harness(name).await;
    let origin = site();
    for (i, case) in cases.iter().enumerate() {
        // A fresh prefix per case: each starts from an empty cache.
        let svc = site_layer(&h, |b| b.prefix(format!("{}{i}:", h.prefix))).layer(origin.service());
        let own_path = case.target.split('?').next().unwrap();
        let mut doomed = two_each(&[own_path]);
        doomed.extend(two_each(case.purges));
        // Another host's entry of a located path goes too: purges name paths.
        if let Some(first) = case.purges.first() {
            doomed.push(Variant {
                host: "other.example",
                ..Variant::new(*first)
            });
        }
        let kept = two_each(case.keeps);
        store_all(&h, &svc, &doomed).await;
        store_all(&h, &svc, &kept).await;

        let status_text = case.status.to_string();
        let mut headers = vec![("x-status", status_text.as_str())];
        if let Some(location) = case.location {
            headers.push(("x-location", location));
        }
        if let Some(location) = case.content_location {
            headers.push(("x-content-location", location));
        }
        let what = format!(
            "{} {} -> Location {:?}, Content-Location {:?}",
            case.method, case.target, case.location, case.content_location
        );
        let reply = send(&svc, request(case.method.clone(), case.target, &headers)).await;
        assert_eq!(reply.status.as_u16(), case.status, "{what}");
        assert_eq!(reply.header("location"), case.location, "{what}");
        assert_eq!(reply.cache_status(), purged(doomed.len()), "{what}");
        assert_purged(&svc, &doomed, &what).await;
        assert_cached(&svc, &kept, &what).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn located(
    method: Method,
    target: &'static str,
    status: u16,
    location: Option<&'static str>,
    content_location: Option<&'static str>,
    purges: &'static [&'static str],
    keeps: &'static [&'static str],
) -> LocationCase {
    LocationCase {
        method,
        target,
        location,
        content_location,
        status,
        purges,
        keeps,
    }
}

async fn location_and_content_location_on_the_same_authority_are_purged(
    backend: Backend,
    name: &str,
) {
    use Method as M;
    let cases = [
        // An absolute path.
        located(
            M::POST,
            "/users",
            201,
            Some("/users/3"),
            None,
            &["/users/3"],
            &["/users/30", "/users/3/posts"],
        ),
        // An absolute URI on the request's authority, with query and fragment.
        located(
            M::POST,
            "/users",
            201,
            None,
            Some("https://example.test/users/4?x=1#top"),
            &["/users/4"],
            &["/users/40"],
        ),
        // A relative path, against the request's directory.
        located(
            M::POST,
            "/users/new",
            201,
            Some("5"),
            None,
            &["/users/5"],
            &["/5", "/users/new/5"],
        ),
        // A network-path reference.
        located(
            M::POST,
            "/users",
            201,
            Some("//example.test/users/6"),
            None,
            &["/users/6"],
            &[],
        ),
        // Both fields, the authority in another case.
        located(
            M::PUT,
            "/users/7",
            200,
            Some("HTTP://EXAMPLE.TEST/users/7/v2"),
            Some("/users/7/current"),
            &["/users/7/v2", "/users/7/current"],
            &["/users/7/v1"],
        ),
        // Another authority: ignored, in both fields and both forms.
        located(
            M::POST,
            "/users",
            201,
            Some("https://other.example/users/8"),
            Some("//other.example/users/9"),
            &[],
            &["/users/8", "/users/9"],
        ),
        // The same host on another port is another authority.
        located(
            M::DELETE,
            "/users/12",
            204,
            Some("https://example.test:8443/users/13"),
            None,
            &[],
            &["/users/13"],
        ),
        // An authority without a path is its root.
        located(
            M::POST,
            "/users",
            201,
            Some("https://example.test"),
            None,
            &["/"],
            &[],
        ),
        // A redirect purges its target too.
        located(
            M::POST,
            "/login",
            303,
            Some("/home"),
            None,
            &["/home"],
            &["/login/home"],
        ),
        // A query in the field does not narrow the purge to it.
        located(
            M::PATCH,
            "/users/10",
            200,
            None,
            Some("/users/11?page=2"),
            &["/users/11"],
            &[],
        ),
    ];
    run_location_cases(backend, name, &cases).await;
}

/// Relative references are resolved as RFC 3986 section 5.2 says (RFC 9110
/// section 10.2.2 for `Location`), dot segments included: the purge must
/// name the path clients will request.
async fn relative_locations_with_dot_segments_are_resolved(backend: Backend, name: &str) {
    use Method as M;
    let cases = [
        located(
            M::POST,
            "/users/new",
            201,
            Some("./5"),
            None,
            &["/users/5"],
            &[],
        ),
        located(
            M::POST,
            "/users/new",
            201,
            Some("../teams/1"),
            None,
            &["/teams/1"],
            &[],
        ),
        located(M::POST, "/a/b/c", 201, None, Some("../../x"), &["/x"], &[]),
        located(
            M::POST,
            "/users",
            201,
            Some("https://example.test/a/../users/8"),
            None,
            &["/users/8"],
            &[],
        ),
    ];
    run_location_cases(backend, name, &cases).await;
}

// ---------------------------------------------------------------------------
// 2. Purge rules
// ---------------------------------------------------------------------------

async fn purge_rules_substitute_parameters(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let svc = site_layer(&h, |b| {
        b.purge_on(
            Method::PUT,
            "/users/{id}",
            ["/users/{id}", "/users", "/teams/*/members"],
        )
    })
    .layer(origin.service());
    let hosts = ["a.example", "b.example"];
    let langs = [None, Some("en")];

    let doomed_paths = [
        "/users/7",
        "/users",
        "/teams/1/members",
        "/teams/2/members",
        // `*` matches any run of characters, `/` included.
        "/teams/a/b/members",
    ];
    let doomed = variants(&doomed_paths, &hosts, &langs);
    let kept = variants(
        &[
            "/users/8",
            "/users/7/posts",
            "/teams/1/other",
            "/teams/1/members/x",
            "/teams/members",
            "/teams",
        ],
        &hosts,
        &langs,
    );
    store_all(&h, &svc, &doomed).await;
    store_all(&h, &svc, &kept).await;

    let reply = send(&svc, request(Method::PUT, "/users/7", &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.cache_status(), purged(doomed.len()));
    assert_purged(&svc, &doomed, "PUT /users/7").await;
    assert_cached(&svc, &kept, "PUT /users/7").await;

    // Rules are per method: a POST or DELETE of the same path purges only
    // that path.
    store_all(&h, &svc, &doomed).await;
    let users_7 = variants(&["/users/7"], &hosts, &langs);
    for method in [Method::POST, Method::DELETE] {
        let reply = send(&svc, request(method.clone(), "/users/7", &[])).await;
        assert_eq!(reply.cache_status(), purged(users_7.len()), "{method}");
        assert_purged(&svc, &users_7, &format!("{method} /users/7")).await;
        assert_cached(
            &svc,
            &doomed[users_7.len()..],
            &format!("{method} /users/7"),
        )
        .await;
        store_all(&h, &svc, &users_7).await;
    }
    // A path the template does not match runs no rule either.
    let reply = send(&svc, request(Method::PUT, "/users/7/posts", &[])).await;
    assert_eq!(reply.cache_status(), purged(4));
    assert_cached(&svc, &doomed, "PUT /users/7/posts").await;
}

async fn catch_all_rules_substitute_the_rest_of_the_path(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let svc = site_layer(&h, |b| {
        b.purge_on(
            Method::POST,
            "/files/{*path}",
            ["/index/{*path}", "/thumbs/{path}/*"],
        )
    })
    .layer(origin.service());

    let doomed = two_each(&[
        "/files/a/b.txt",
        "/index/a/b.txt",
        "/thumbs/a/b.txt/small",
        "/thumbs/a/b.txt/large/2x",
    ]);
    let kept = two_each(&[
        "/files/a",
        "/index/a",
        "/index/a/c.txt",
        "/index/a/b.txt/x",
        "/thumbs/a/b.txt",
        "/thumbs/a/c.txt/small",
    ]);
    store_all(&h, &svc, &doomed).await;
    store_all(&h, &svc, &kept).await;

    let reply = send(&svc, request(Method::POST, "/files/a/b.txt", &[])).await;
    assert_eq!(reply.cache_status(), purged(doomed.len()));
    assert_purged(&svc, &doomed, "POST /files/a/b.txt").await;
    assert_cached(&svc, &kept, "POST /files/a/b.txt").await;

    // The rest of the path is literal text in the targets: `*` from the
    // request does not widen `/thumbs/{path}/*`.
    store_all(&h, &svc, &doomed).await;
    let literal = two_each(&["/files/*", "/index/*", "/thumbs/*/small"]);
    store_all(&h, &svc, &literal).await;
    let reply = send(&svc, request(Method::POST, "/files/*", &[])).await;
    assert_eq!(reply.cache_status(), purged(literal.len()));
    assert_purged(&svc, &literal, "POST /files/*").await;
    assert_cached(&svc, &doomed, "POST /files/*").await;
    assert_cached(&svc, &kept, "POST /files/*").await;
}

#[test]
fn bad_purge_rules_fail_at_build() {
    type Configure = fn(tower_cache_aside::Builder) -> tower_cache_aside::Builder;
    let cases: [(&str, &str, Configure); 7] = [
        (
            "a parameter the template does not capture",
            "/users/{id}",
            |b| b.purge_on(Method::PUT, "/users/{id}", ["/users/{name}"]),
        ),
        (
            "a catch-all the template does not capture",
            "/users/{id}",
            |b| b.purge_on(Method::PUT, "/users/{id}", ["/users/{id}/{*rest}"]),
        ),
        ("the same rule twice", "/users/{id}", |b| {
            b.purge_on(Method::PUT, "/users/{id}", ["/users"]).purge_on(
                Method::PUT,
                "/users/{id}",
                ["/teams"],
            )
        }),
        (
            "two rules that match the same paths",
            "/users/{name}",
            |b| {
                b.purge_on(Method::PUT, "/users/{id}", ["/users"]).purge_on(
                    Method::PUT,
                    "/users/{name}",
                    ["/users/{name}"],
                )
            },
        ),
        ("a target without a leading /", "/users/{id}", |b| {
            b.purge_on(Method::PUT, "/users/{id}", ["users"])
        }),
        ("an unclosed brace", "/users/{id}", |b| {
            b.purge_on(Method::PUT, "/users/{id}", ["/users/{id"])
        }),
        ("a template without a leading /", "users/{id}", |b| {
            b.purge_on(Method::PUT, "users/{id}", ["/users"])
        }),
    ];
    for (what, bad_template, configure) in cases {
        let result = configure(CacheAsideLayer::builder(MemoryStore::new())).build();
        match result {
            Err(Error::InvalidRoute { template, reason }) => {
                assert_eq!(template, bad_template, "{what}: {reason}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected InvalidRoute, got {other:?}"),
        }
    }

    // The same rule for another method, and a rule of every shape, build.
    CacheAsideLayer::builder(MemoryStore::new())
        .purge_on(
            Method::PUT,
            "/users/{id}",
            ["/users/{id}", "/users", "/teams/*/members"],
        )
        .purge_on(Method::DELETE, "/users/{id}", ["/users/{id}/*"])
        .purge_on(
            Method::POST,
            "/files/{*path}",
            ["/index/{*path}", "/thumbs/{path}/*"],
        )
        .purge_on(Method::POST, "/users", ["/users", "/stats"])
        .build()
        .expect("valid rules");
}

// ---------------------------------------------------------------------------
// 3. Globs
// ---------------------------------------------------------------------------

async fn purge_glob_purges_matching_paths_only(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let layer = site_layer(&h, |b| b);
    let purger = layer.purger();
    let svc = layer.layer(origin.service());

    let doomed = variants(
        &[
            "/reports/2026-01",
            "/reports/2026-02?format=csv",
            "/reports/2026-03/summary",
            "/reports/2026-",
            // A spelling of `/reports/2026-01`: one resource.
            "/reports/2026%2D01",
        ],
        &["a.example", "b.example"],
        &[None, Some("en")],
    );
    let kept = two_each(&[
        "/reports/2025-12",
        "/reports/2026",
        "/reports/x2026-01",
        "/reports",
        "/archive/reports/2026-01",
        "/reports/2026%2F01",
    ]);
    store_all(&h, &svc, &doomed).await;
    store_all(&h, &svc, &kept).await;

    assert_eq!(
        purger.purge_glob("/reports/2026-*").await.unwrap(),
        doomed.len() as u64
    );
    assert_purged(&svc, &doomed, "/reports/2026-*").await;
    assert_cached(&svc, &kept, "/reports/2026-*").await;
    assert_eq!(
        purger.purge_glob("/reports/2026-*").await.unwrap(),
        0,
        "nothing left"
    );

    // Every character but `*` is literal, Redis glob syntax included.
    for glob in [
        "/reports/2025-1?",
        "/reports/2025-1[0-9]",
        "/reports/202[56]-12",
        "/reports/2025-1\\2",
        "/reports/2025-12/",
    ] {
        assert_eq!(purger.purge_glob(glob).await.unwrap(), 0, "{glob}");
    }
    assert_cached(&svc, &kept, "literal globs").await;

    // A glob without `*` is one path; `*` alone at the end of a prefix
    // takes everything below it.
    assert_eq!(purger.purge_glob("/reports").await.unwrap(), 2);
    assert_eq!(purger.purge_glob("/archive/*").await.unwrap(), 2);
    assert_cached(&svc, &kept[..4], "after /reports and /archive/*").await;
}

/// A resource longer than the key keeps verbatim is stored under a hashed
/// name (its first 256 encoded bytes, `#`, a hash); a glob that matches its
/// path must still reach it. Only the head is known for such a resource, so
/// a glob purges it whenever a path with that head could match: it may
/// purge too much (safe), never too little.
async fn a_glob_reaches_long_paths_too(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let layer = site_layer(&h, |b| b);
    let purger = layer.purger();
    let svc = layer.layer(origin.service());

    let long_team = format!("/teams/{}/members", "t".repeat(600));
    let long_report = format!("/reports/2026-{}", "9".repeat(600));
    // Differs from `long_team` only past the kept head: purged with it.
    let same_head = format!("/teams/{}/other", "t".repeat(600));
    let doomed = two_each(&[&long_team, &long_report, "/teams/1/members", &same_head]);
    let kept = two_each(&[
        &format!("/groups/{}/members", "t".repeat(600)),
        &format!("/reports/2025-{}", "9".repeat(600)),
        "/teams/1/other",
    ]);
    store_all(&h, &svc, &doomed).await;
    store_all(&h, &svc, &kept).await;

    assert_eq!(
        purger.purge_glob("/reports/2026-*").await.unwrap(),
        2,
        "a long path under a prefix glob"
    );
    assert_eq!(
        purger.purge_glob("/teams/*/members").await.unwrap(),
        6,
        "long paths matched by a glob with a suffix (and the one sharing their head)"
    );
    assert_purged(&svc, &doomed, "long paths").await;
    assert_cached(&svc, &kept, "long paths").await;
}

// ---------------------------------------------------------------------------
// 4. Text from requests cannot widen a purge
// ---------------------------------------------------------------------------

async fn glob_characters_in_requests_purge_only_the_literal_resource(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let layer = site_layer(&h, |b| {
        b.purge_on(
            Method::DELETE,
            "/users/{id}",
            ["/users/{id}", "/users/{id}/*"],
        )
    });
    let purger = layer.purger();
    let svc = layer.layer(origin.service());

    let base = two_each(&[
        "/users",
        "/users/1",
        "/users/2",
        "/users/1/posts",
        "/users/a",
        "/users/ab",
        "/users/a/posts",
    ]);
    // Each attack's target, and the literal resources it may purge: its own
    // path and, through `/users/{id}/*`, that path's literal sub-paths. The
    // http crate accepts all of these raw, brackets and backslash included.
    let attacks: Vec<(&str, Vec<String>)> = [
        "/users/*",
        "/users/%2A",
        "/users/**",
        "/users/*a*",
        "/users/[a]",
        "/users/%5Ba%5D",
        "/users/[!a]",
        "/users/[a-z]",
        "/users/%3F",
        "/users/\\",
        "/users/%5C",
        "/users/\\*",
        "/users/{a}",
        "/users/%7Ba%7D",
        "/users/}",
        "/users/%",
        "/users/%25",
    ]
    .into_iter()
    .map(|t| (t, vec![decoded(t), format!("{}/posts", decoded(t))]))
    // `?` starts the query: the path is `/users/`, which the rule's
    // template does not match, so only `/users/` itself goes.
    .chain([
        ("/users/?", vec!["/users/".to_owned()]),
        ("/users/?*", vec![]),
    ])
    .collect();
    for (target, _) in &attacks {
        let parsed: http::Uri = target.parse().expect("the http crate accepts it");
        assert!(parsed.path().starts_with("/users/"), "{target}");
    }
    // Every spelling of the attacks is stored (but `/users/%`, which is
    // malformed and passes uncached); a DELETE purges the spellings whose
    // path decodes to its own, or to that path's literal sub-paths.
    store_all(&h, &svc, &base).await;
    let mut standing: Vec<Variant> = Vec::new();
    for (target, _) in &attacks {
        for v in [
            Variant::new(*target),
            Variant::new(format!("{target}/posts")),
        ] {
            if !standing.contains(&v) && !v.target.contains('?') && *target != "/users/%" {
                standing.push(v);
            }
        }
    }
    standing.push(Variant::new("/users/"));
    store_all(&h, &svc, &standing).await;
    let victims = |literals: &[String], standing: &[Variant]| -> Vec<Variant> {
        standing
            .iter()
            .filter(|v| literals.contains(&decoded(&v.target)))
            .cloned()
            .collect()
    };

    for (target, literals) in &attacks {
        let doomed = victims(literals, &standing);

        // Already purged by an earlier attack with the same path.
        let present = doomed.iter().filter(|v| standing.contains(v)).count();
        let reply = send(&svc, request(Method::DELETE, target, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{target}");
        assert_eq!(reply.cache_status(), purged(present), "DELETE {target}");
        standing.retain(|v| !doomed.contains(v));
        assert_purged(&svc, &doomed, &format!("DELETE {target}")).await;
        assert_cached(&svc, &base, &format!("DELETE {target}")).await;
        assert_cached(&svc, &standing, &format!("DELETE {target}")).await;
    }

    assert!(standing.is_empty(), "every spelling went: {standing:?}");

    // The Purger takes paths as they appear in requests: literally.
    let star = vec![Variant::new("/users/*")];
    store_all(&h, &svc, &star).await;
    assert_eq!(purger.purge_path("/users/*").await.unwrap(), 1);
    assert_purged(&svc, &star, "purge_path(/users/*)").await;
    for path in [
        "/users/?",
        "/users/[12]",
        "/users/[a]*",
        "/users/\\*",
        "/users/%2A",
    ] {
        assert_eq!(purger.purge_path(path).await.unwrap(), 0, "{path}");
    }
    assert_cached(&svc, &base, "purge_path").await;
}

// ---------------------------------------------------------------------------
// 5. A resource with many variants
// ---------------------------------------------------------------------------

async fn a_resource_with_many_variants_is_purged_completely(backend: Backend, name: &str) {
    const VARIANTS: usize = 200;
    let h = backend.harness(name).await;
    let origin = site();
    let svc = site_layer(&h, |b| b).layer(origin.service());

    let hosts = ["a.example", "b.example", "c.example"];
    let langs = [None, Some("en"), Some("fr"), Some("de")];
    let many: Vec<Variant> = (0..VARIANTS)
        .map(|i| Variant {
            target: if i == 0 {
                "/items/1".to_owned()
            } else {
                format!("/items/1?page={}&sort={}", i / 2, i % 2)
            },
            host: hosts[i % hosts.len()],
            lang: langs[i % langs.len()],
        })
        .collect();
    let unrelated = variants(
        &["/items/2", "/items/10", "/items/1/reviews", "/items"],
        &hosts,
        &[None, Some("en")],
    );
    store_all(&h, &svc, &many).await;
    store_all(&h, &svc, &unrelated).await;

    let raw = match &h.redis {
        Some(server) => Some(support::fred_client(&server.url()).await),
        None => None,
    };
    let keys_of = |path: &str| format!("{}{{{path}}}*", h.prefix);
    if let Some(raw) = &raw {
        let keys = scan_keys(raw, &keys_of("/items/1")).await;
        assert_eq!(
            keys,
            [
                format!("{}{{/items/1}}", h.prefix),
                format!("{}{{/items/1}}:t", h.prefix)
            ],
            "the resource's hash and its expiry set"
        );
        let fields = support::cached_fields(raw, &keys_of("/items/1")).await;
        assert_eq!(fields.len(), VARIANTS, "one field per variant: {fields:?}");
    }

    let reply = send(
        &svc,
        request(Method::PUT, "/items/1?page=3", &[("host", "c.example")]),
    )
    .await;
    assert_eq!(reply.cache_status(), purged(VARIANTS));
    assert_purged(&svc, &many, "PUT /items/1").await;
    assert_cached(&svc, &unrelated, "PUT /items/1").await;

    if let Some(raw) = &raw {
        let left = scan_keys(raw, &keys_of("/items/1")).await;
        assert_eq!(
            left,
            Vec::<String>::new(),
            "no key of /items/1 is left, expiry set included"
        );
        for path in ["/items/2", "/items/10", "/items/1/reviews", "/items"] {
            let fields = support::cached_fields(raw, &keys_of(path)).await;
            assert_eq!(fields.len(), 6, "{path}: untouched: {fields:?}");
            assert_eq!(scan_keys(raw, &keys_of(path)).await.len(), 2, "{path}");
        }
    }
}

// ---------------------------------------------------------------------------
// 7. The Purger handle
// ---------------------------------------------------------------------------

async fn purger_calls_return_how_many_entries_they_removed(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let origin = site();
    let layer = site_layer(&h, |b| {
        b.purge_on(Method::PUT, "/users/{id}", ["/users", "/teams/*/members"])
    });
    let purger = layer.purger();
    let svc = layer.layer(origin.service());

    let user_7 = variants(
        &["/users/7", "/users/7?full=1"],
        &["a.example"],
        &[None, Some("en")],
    );
    let users = two_each(&["/users"]);
    let members = two_each(&["/teams/1/members", "/teams/2/members"]);
    let reports = two_each(&["/reports/2026-01", "/reports/2026-02"]);
    let kept = two_each(&["/users/8", "/teams/1"]);
    for set in [&user_7, &users, &members, &reports, &kept] {
        store_all(&h, &svc, set).await;
    }

    assert_eq!(purger.purge_path("/users/7").await.unwrap(), 4);
    assert_eq!(
        purger.purge_path("/users/7").await.unwrap(),
        0,
        "nothing left"
    );
    assert_purged(&svc, &user_7, "purge_path").await;
    assert_cached(&svc, &users, "purge_path names one path").await;

    // A clone works on the same layer, from another task.
    store_all(&h, &svc, &user_7).await;
    let clone = purger.clone();
    let removed = tokio::spawn(async move { clone.purge_for(&Method::PUT, "/users/7").await })
        .await
        .expect("the task ends")
        .unwrap();
    assert_eq!(removed, (user_7.len() + users.len() + members.len()) as u64);
    assert_purged(&svc, &user_7, "purge_for").await;
    assert_purged(&svc, &users, "purge_for").await;
    assert_purged(&svc, &members, "purge_for").await;
    assert_cached(&svc, &kept, "purge_for").await;
    assert_cached(&svc, &reports, "purge_for").await;

    // Without a rule for the method, only the path itself.
    store_all(&h, &svc, &user_7).await;
    store_all(&h, &svc, &users).await;
    assert_eq!(
        purger.purge_for(&Method::DELETE, "/users/7").await.unwrap(),
        4
    );
    assert_cached(&svc, &users, "purge_for DELETE").await;

    assert_eq!(purger.purge_glob("/reports/*").await.unwrap(), 4);
    assert_purged(&svc, &reports, "purge_glob").await;
    assert_cached(&svc, &kept, "purge_glob").await;
    assert_eq!(purger.purge_glob("/reports/*").await.unwrap(), 0);
}

// ---------------------------------------------------------------------------
// 8. Read your writes under concurrency
// ---------------------------------------------------------------------------

const PAIRS: usize = 50;
const ROUNDS: usize = 20;
const KEYS: usize = 10;

/// A cheap deterministic spread of delays (splitmix64 over a counter).
fn jitter_micros(max: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut z = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (max + 1)
}

/// Each writer/reader pair does `PUT /k` (the origin bumps k's version and
/// answers it), then `GET /k` twice, and must read at least the version its
/// PUT answered. This tests that a write's purge completes before its
/// response is returned, under load, on a multi-threaded runtime.
///
/// It does not test the race that leases will fence: a GET that reached the
/// origin before a PUT and stores its older answer after that PUT's purge
/// can still poison the cache. So the pairs of one key take turns (a lock
/// per key, held until the writes of the pair's GETs are over), and the
/// only reads of a key are those issued after its latest PUT answered; the
/// keys themselves run in parallel.
///
/// With `mixed`, every PUT and every round's GETs pick a spelling of the
/// key's path at random (`/k1`, `/%6B1`, `/k%31`, `/%6b%31`, …), and the
/// origin reads the path decoded, as a handler's path parameters do: a
/// write through any spelling must purge what any other stored.
async fn read_your_writes(backend: Backend, name: &str, mixed: bool) {
    let h = backend.harness(name).await;
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let map = versions.clone();
    let origin = tower::service_fn(move |req: Request<()>| {
        let map = map.clone();
        async move {
            let path = decoded(req.uri().path());
            let version = if req.method() == Method::PUT {
                let mut map = map.lock().unwrap();
                let version = map.entry(path).or_default();
                *version += 1;
                *version
            } else {
                tokio::time::sleep(Duration::from_micros(jitter_micros(5_000))).await;
                map.lock().unwrap().get(&path).copied().unwrap_or(0)
            };
            Ok::<_, Infallible>(Response::new(TestBody::full(version.to_string())))
        }
    });
    let svc = h
        .layer(|b| b.purge_timeout(Duration::from_secs(10)))
        .layer(origin);
    let locks: Arc<Vec<tokio::sync::Mutex<()>>> =
        Arc::new((0..KEYS).map(|_| tokio::sync::Mutex::new(())).collect());

    let tasks: Vec<_> = (0..PAIRS)
        .map(|pair| {
            let svc = svc.clone();
            let store: Arc<CountingStore> = h.store.clone();
            let locks = locks.clone();
            tokio::spawn(async move {
                let key = pair % KEYS;
                let path = format!("/k{key}");
                let mut violations = Vec::new();
                let (mut hits, mut purged_total) = (0usize, 0u64);
                for round in 0..ROUNDS {
                    let _turn = locks[key].lock().await;
                    let spelling = |path: &str| if mixed { respell(path) } else { path.to_owned() };
                    let put = send(&svc, request(Method::PUT, &spelling(&path), &[])).await;
                    assert_eq!(put.status, StatusCode::OK);
                    let written: u64 = put.text().parse().unwrap();
                    let status = put.cache_status();
                    let count = status
                        .strip_prefix(&format!("{METHOD}; purged="))
                        .unwrap_or_else(|| panic!("a purge that succeeded: {status}"));
                    purged_total += count.parse::<u64>().unwrap();
                    let read_as = spelling(&path);
                    for read in 0..2 {
                        let finished = store.puts_finished_for(&path);
                        let got = send(&svc, request(Method::GET, &read_as, &[])).await;
                        let seen: u64 = got.text().parse().unwrap();
                        if seen < written {
                            violations.push(format!(
                                "pair {pair} round {round} read {read}: wrote {written}, read {seen} ({})",
                                got.cache_status()
                            ));
                        }
                        if got.is_hit() {
                            hits += 1;
                        } else if got.cache_status() == STORED {
                            // Its write must be over before the next PUT of
                            // this key (see above).
                            store.wait_puts_for(&path, finished + 1).await;
                        }
                    }
                }
                (violations, hits, purged_total)
            })
        })
        .collect();

    let (mut violations, mut hits, mut purged_total) = (Vec::new(), 0, 0);
    for task in tasks {
        let (v, h, p) = task.await.expect("a pair task panicked");
        violations.extend(v);
        hits += h;
        purged_total += p;
    }
    assert_eq!(violations.len(), 0, "stale reads: {violations:#?}");
    // The cache was in play: each pair's second GET hit what its first
    // stored, and each PUT but the first of a key purged that entry.
    assert_eq!(hits, PAIRS * ROUNDS, "second reads that hit");
    assert_eq!(
        purged_total,
        (PAIRS * ROUNDS - KEYS) as u64,
        "entries purged by the PUTs"
    );
    let last: u64 = versions.lock().unwrap().values().sum();
    assert_eq!(
        last,
        (PAIRS * ROUNDS) as u64,
        "every PUT reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_under_concurrency_redis() {
    read_your_writes(Backend::Redis, "read_your_writes", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_through_mixed_spellings_redis() {
    read_your_writes(Backend::Redis, "read_your_writes_mixed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_through_mixed_spellings_memory() {
    read_your_writes(Backend::Memory, "read_your_writes_mixed", true).await;
}

/// One spelling of `path`, at random: each byte after a `/` percent-encoded
/// or not, in either hex case.
fn respell(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        match (byte, jitter_micros(2)) {
            (b'/', _) | (_, 0) => out.push(char::from(byte)),
            (_, 1) => out.push_str(&format!("%{byte:02X}")),
            _ => out.push_str(&format!("%{byte:02x}")),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_under_concurrency_memory() {
    read_your_writes(Backend::Memory, "read_your_writes", false).await;
}

/// A path with every escape decoded, as a wildcard capture sees it (a
/// reference decoder, not the crate's).
fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}
