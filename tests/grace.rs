//! Grace: stale-while-revalidate, stale-if-error and TTL jitter, on both
//! stores.

#[macro_use]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use tower::Layer;

use support::{get, send, Backend, Origin, TestBody, STORED};

suite!(
    stale_while_revalidate_serves_stale_once_then_fresh_with_one_refresh,
    stale_if_error_answers_an_origin_5xx_with_the_stale_entry,
    ttl_jitter_spreads_expiries,
    purged_entries_are_never_served_stale,
    stale_if_error_answers_an_origin_error_with_the_stale_entry,
);

/// An origin whose answer is the number of its calls so far: `v1`, `v2`…
fn counting_origin() -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::new(move |_req| {
        let v = n.fetch_add(1, Ordering::SeqCst) + 1;
        Response::new(TestBody::full(format!("v{v}")))
    })
}

/// Sleeps a little past `d` (waiting for a TTL to pass, not for a signal).
async fn outlive(d: Duration) {
    tokio::time::sleep(d + Duration::from_millis(200)).await;
}

async fn stale_while_revalidate_serves_stale_once_then_fresh_with_one_refresh(
    backend: Backend,
    name: &str,
) {
    let h = backend.harness(name).await;
    let ttl = Duration::from_secs(1);
    let layer = h.layer(|b| b.ttl(ttl).stale_while_revalidate(Duration::from_secs(30)));
    let origin = counting_origin();
    let svc = layer.layer(origin.service());

    let first = send(&svc, get("/swr")).await;
    assert_eq!(first.cache_status(), STORED);
    assert_eq!(first.text(), "v1");
    h.store.wait_puts(1).await;
    outlive(ttl).await;

    // Ten concurrent readers of the stale entry: all answered at once
    // with it, and one of them refreshes it.
    let mut readers = Vec::new();
    for _ in 0..10 {
        let svc = svc.clone();
        readers.push(tokio::spawn(async move { send(&svc, get("/swr")).await }));
    }
    for reader in readers {
        let reply = reader.await.unwrap();
        assert!(reply.is_stale_hit(), "{}", reply.cache_status());
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "v1");
    }
    h.store.wait_puts(2).await;
    assert_eq!(origin.calls(), 2, "one refresh for ten stale reads");

    let fresh = send(&svc, get("/swr")).await;
    assert!(fresh.is_hit(), "{}", fresh.cache_status());
    assert_eq!(fresh.text(), "v2");
    assert_eq!(origin.calls(), 2);
}

async fn stale_if_error_answers_an_origin_5xx_with_the_stale_entry(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let ttl = Duration::from_secs(1);
    let layer = h.layer(|b| b.ttl(ttl).stale_if_error(Duration::from_secs(1)));
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = {
        let calls = calls.clone();
        Origin::new(move |_req| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Response::new(TestBody::full("good"))
            } else {
                Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(TestBody::full("broken"))
                    .unwrap()
            }
        })
    };
    let svc = layer.layer(origin.service());

    assert_eq!(send(&svc, get("/sie")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(ttl).await;

    // Past its freshness, within stale-if-error: the origin is asked, and
    // its 502 is answered with the stale entry.
    let reply = send(&svc, get("/sie")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "good");
    let status = reply.cache_status();
    assert!(
        status.starts_with("tower-cache-aside; hit; fwd=stale; ttl=-")
            && status.ends_with("; detail=stale-if-error"),
        "{status}"
    );
    assert_eq!(origin.calls(), 2, "the origin was asked first");

    // Past the window too: the origin's answer goes through.
    outlive(Duration::from_secs(1)).await;
    let reply = send(&svc, get("/sie")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.text(), "broken");
}

async fn ttl_jitter_spreads_expiries(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let layer = h.layer(|b| b.ttl(Duration::from_secs(100)).ttl_jitter(0.5));
    let origin = Origin::text("same");
    let svc = layer.layer(origin.service());

    for i in 0..20 {
        assert_eq!(
            send(&svc, get(&format!("/j/{i}"))).await.cache_status(),
            STORED
        );
    }
    h.store.wait_puts(20).await;
    let mut ttls = Vec::new();
    for i in 0..20 {
        let hit = send(&svc, get(&format!("/j/{i}"))).await;
        ttls.push(hit.hit_ttl().expect("a hit"));
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(
        ttls.iter().all(|t| (49..=100).contains(t)),
        "within [ttl * (1 - 0.5), ttl]: {ttls:?}"
    );
    assert!(
        ttls.len() >= 5,
        "entries written together expire apart: {ttls:?}"
    );
}

async fn purged_entries_are_never_served_stale(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let ttl = Duration::from_secs(1);
    let layer = h.layer(|b| {
        b.ttl(ttl)
            .stale_while_revalidate(Duration::from_secs(30))
            .stale_if_error(Duration::from_secs(30))
    });
    let origin = counting_origin();
    let svc = layer.layer(origin.service());

    assert_eq!(send(&svc, get("/p")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(ttl).await;
    let write = send(&svc, support::request(http::Method::PUT, "/p", &[])).await;
    assert!(write
        .cache_status()
        .starts_with("tower-cache-aside; fwd=method; purged=1"));

    let after = send(&svc, get("/p")).await;
    assert_eq!(after.cache_status(), STORED, "a miss, not a stale hit");
    assert_eq!(after.text(), "v3");
}

async fn stale_if_error_answers_an_origin_error_with_the_stale_entry(backend: Backend, name: &str) {
    let h = backend.harness(name).await;
    let ttl = Duration::from_secs(1);
    let layer = h.layer(|b| b.ttl(ttl).stale_if_error(Duration::from_secs(30)));
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = tower::service_fn(move |_req: http::Request<()>| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                Ok(Response::new(TestBody::full("good")))
            } else {
                Err::<Response<TestBody>, support::BoxError>("the origin is down".into())
            }
        }
    });
    let svc = layer.layer(origin);

    assert_eq!(send(&svc, get("/err")).await.cache_status(), STORED);
    h.store.wait_puts(1).await;
    outlive(ttl).await;
    let reply = send(&svc, get("/err")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "good");
    assert!(reply.cache_status().ends_with("; detail=stale-if-error"));
}
