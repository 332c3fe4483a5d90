//! The Redis store on a real Redis Cluster: three primaries started by this
//! binary on free loopback ports and joined with `redis-cli --cluster
//! create`. It runs the paths that only a cluster exercises: scripts whose
//! keys share a hash tag, a large value's `GET` sent along with its script
//! (same node, same connection), batch reads grouped by slot, pattern purges
//! that scan every primary, and fill announcements heard across nodes.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::types::CustomCommand;
use http::{Method, Response, StatusCode};
use tower::{Layer, Service};
use tower_cache_aside::{Cache, CacheAsideLayer, RedisStore};

use support::cluster::{slot_owner, ClusterNodes, SlotMigration};
use support::{
    assert_hit, assert_write_purges, get, head, miss, request, send, CountingStore, Origin,
    TestBody, STORED,
};

/// Three cluster primaries.
struct Cluster {
    nodes: ClusterNodes,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster {
            nodes: ClusterNodes::start(3, 0),
        }
    }

    fn url(&self) -> String {
        self.nodes.url()
    }

    /// A counting store over a new `RedisStore` connected to the cluster.
    async fn store(&self) -> Arc<CountingStore> {
        CountingStore::new(Arc::new(
            RedisStore::connect(&self.url())
                .await
                .expect("connect to the cluster"),
        ))
    }

    /// Waits (bounded) until every node reports the cluster as ok: `create`
    /// returns once the nodes agree on the slots, and the state follows.
    async fn wait_ok(&self) {
        for node in &self.nodes.nodes {
            let client = support::fred_client(&node.url()).await;
            let mut state = String::new();
            for _ in 0..200 {
                state = client
                    .custom(
                        CustomCommand::new_static("CLUSTER", None, false),
                        vec!["INFO"],
                    )
                    .await
                    .expect("CLUSTER INFO");
                if state.contains("cluster_state:ok") {
                    break;
                }
                // No event announces it; poll, bounded to 10 s.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(state.contains("cluster_state:ok"), "{state}");
            let _ = client.quit().await;
        }
    }
}

fn body_for(path: &str) -> String {
    // Every fourth path answers 16 KiB: read with a `GET` beside the script.
    let n: usize = path
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let size = if n % 4 == 0 { 16 * 1024 } else { 200 };
    let mut body = format!("{path}:");
    while body.len() < size {
        body.push('x');
    }
    body
}

#[tokio::test]
async fn the_layer_and_the_typed_cache_work_on_a_cluster() {
    let cluster = Cluster::start();
    cluster.wait_ok().await;
    let store = cluster.store().await;
    let origin = Origin::new(|req| {
        let body = if req.method() == Method::HEAD {
            String::new()
        } else {
            body_for(req.uri().path())
        };
        Response::builder()
            .header("content-type", "text/plain")
            .body(TestBody::full(body))
            .unwrap()
    });
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix("t:cluster:")
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(origin.service());

    // Forty resources, spread over the three primaries' slots.
    let paths: Vec<String> = (0..40).map(|i| format!("/c/{i}")).collect();
    for path in &paths {
        let first = send(&svc, get(path)).await;
        assert_eq!(first.cache_status(), STORED, "{path}");
    }
    store.wait_puts(paths.len()).await;
    for path in &paths {
        for _ in 0..2 {
            let hit = send(&svc, get(path)).await;
            assert_hit(&hit);
            assert_eq!(hit.text(), body_for(path), "{path}");
        }
        let headed = send(&svc, head(path)).await;
        assert_hit(&headed);
    }
    assert_eq!(
        origin.calls(),
        paths.len(),
        "every read after the first hit"
    );

    // A write purges its path (exact purge: one slot).
    let written = send(&svc, request(Method::PUT, "/c/3", &[])).await;
    assert_eq!(written.status, StatusCode::OK);
    assert!(
        written.cache_status().contains("purged=1"),
        "{}",
        written.cache_status()
    );
    let after = send(&svc, get("/c/3")).await;
    assert_eq!(after.cache_status(), STORED, "read after the write");
    store.wait_puts(paths.len() + 1).await;

    // A glob purge scans every primary.
    let removed = layer.purger().purge_glob("/c/*").await.unwrap();
    assert_eq!(removed, paths.len() as u64, "every entry, on every node");
    for path in &paths {
        let reply = send(&svc, get(path)).await;
        assert_eq!(reply.cache_status(), STORED, "{path} after the glob purge");
    }

    // The typed cache: a batch read groups its keys by slot.
    let cache = Cache::builder(store.as_dyn())
        .prefix("t:cluster-obj:")
        .build()
        .unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("item:{i}")).collect();
    let fetched = Arc::new(AtomicUsize::new(0));
    for round in 0..2 {
        let fetched = fetched.clone();
        let values: Vec<Option<String>> = cache
            .get_many_or_fetch(
                &keys,
                Duration::from_secs(60),
                move |missing: Vec<String>| {
                    fetched.fetch_add(missing.len(), Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(missing.into_iter().map(|k| (k.clone(), k)).collect())
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(values.len(), keys.len(), "round {round}");
        for (key, value) in keys.iter().zip(&values) {
            assert_eq!(value.as_deref(), Some(key.as_str()), "round {round}");
        }
        if round == 0 {
            // Writes are in the background; wait until all are readable.
            store.wait_puts(2 * paths.len() + 1 + keys.len()).await;
        }
    }
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        keys.len(),
        "the second round hit"
    );
}

#[tokio::test]
async fn one_origin_call_per_cold_key_across_instances_on_a_cluster() {
    let cluster = Cluster::start();
    cluster.wait_ok().await;
    let origin = Origin::new(|_| Response::builder().body(TestBody::full("cold")).unwrap());
    let slow = {
        let origin = origin.clone();
        tower::service_fn(move |req: http::Request<()>| {
            let mut inner = origin.service();
            async move {
                // The origin's work, long enough for every request to miss.
                tokio::time::sleep(Duration::from_millis(200)).await;
                inner.call(req).await
            }
        })
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&cluster.url()).await.unwrap();
        let layer = CacheAsideLayer::builder(store)
            .prefix("t:cluster-cold:")
            .store_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        instances.push(layer.layer(slow.clone()));
    }
    let requests = (0..40).map(|i| {
        let svc = instances[i % instances.len()].clone();
        async move { send(&svc, get("/cold")).await }
    });
    let replies = futures_util::future::join_all(requests).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "cold");
    }
    assert_eq!(
        origin.calls(),
        1,
        "one fill for 40 cold requests on 2 instances"
    );
}

/// Every spelling of a path is one resource, so one hash on one slot: a
/// write through any spelling purges the entries of all of them with one
/// exact purge, for resources spread over the three primaries.
#[tokio::test]
async fn every_spelling_of_a_path_lands_on_one_slot() {
    let cluster = Cluster::start();
    cluster.wait_ok().await;
    let store = cluster.store().await;
    let origin = Origin::text("page");
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .prefix("t:cluster-spellings:")
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(origin.service());
    let mut puts = 0;
    for digit in 0..10 {
        let spellings = [
            format!("/s/{digit}"),
            format!("/s/%3{digit}"),
            format!("/%73/{digit}"),
            format!("/%73/%3{digit}"),
        ];
        for spelling in &spellings {
            let reply = send(&svc, get(spelling)).await;
            assert_eq!(reply.cache_status(), STORED, "{spelling}");
            puts += 1;
            store.wait_puts(puts).await;
            assert_hit(&send(&svc, get(spelling)).await);
        }
        // Through yet another spelling (an encoded slash, which a wildcard
        // capture reads as `/`).
        let write = send(&svc, request(Method::PUT, &format!("/%73%2F{digit}"), &[])).await;
        assert_eq!(write.status, StatusCode::OK);
        assert!(
            write.cache_status().ends_with("purged=4"),
            "/s/{digit}: {}",
            write.cache_status()
        );
        for spelling in &spellings {
            let reply = send(&svc, get(spelling)).await;
            assert_eq!(reply.cache_status(), STORED, "{spelling} after the write");
            puts += 1;
            store.wait_puts(puts).await;
        }
    }
}

/// Where a migration test moves its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Another of the three primaries.
    OtherPrimary,
    /// A primary added empty, which fred has no connection to.
    NewNode,
}

/// Every way the store reaches Redis follows a slot while it migrates,
/// step by step (`tests/cluster_changes.rs` does it under load): reads
/// through an instance that has seen the entries (a hinted `HGET`) and
/// through a new one (the lookup script, then a large value's `HGET`),
/// scripts the new owner does not know, and purges, on resources whose
/// keys are on the slot's old owner, on its new one (`ASK`), on neither
/// (`TRYAGAIN` there), or split between them (`TRYAGAIN` here), and a
/// glob purge; then `MOVED` once the slots have moved.
async fn follows_a_migration(target: Target) {
    let mut cluster = Cluster::start();
    cluster.wait_ok().await;
    let new_node = (target == Target::NewNode).then(|| cluster.nodes.add_empty_primary());
    let store = cluster.store().await;
    let origin = Origin::new(|req| {
        Response::builder()
            .body(TestBody::full(body_for(req.uri().path())))
            .unwrap()
    });
    let layer_on = |store: Arc<CountingStore>| {
        CacheAsideLayer::builder(store.as_dyn())
            .prefix("t:m:")
            .store_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let layer = layer_on(store.clone());
    let svc = layer.layer(origin.service());
    // A small value, a large one (read by `HGET` after the script), one
    // purged before the migration (its keys on no node), one purged while
    // its keys are on the old owner, one whose keys get split.
    let (small, large, gone, early, split) = ("/m/1", "/m/4", "/m/5", "/m/2", "/m/3");
    let paths = [small, large, gone, early, split];
    for (n, path) in paths.into_iter().enumerate() {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
        store.wait_puts(n + 1).await;
        assert_hit(&send(&svc, get(path)).await);
    }
    assert_write_purges(&svc, gone, 1).await;

    // Each path's slot opens for a move from its owner to the target.
    let mut admins = Vec::new();
    for node in &cluster.nodes.nodes {
        admins.push((node.port(), support::fred_client(&node.url()).await));
    }
    let admin = |port: u16| &admins.iter().find(|(p, _)| *p == port).unwrap().1;
    let mut migrations = Vec::new();
    for path in paths {
        let slot = fred::util::redis_keyslot(format!("t:m:{{{path}}}").as_bytes());
        let source = slot_owner(&admins[0].1, slot).await;
        let target = new_node.unwrap_or_else(|| {
            admins
                .iter()
                .map(|(p, _)| *p)
                .find(|p| *p != source)
                .unwrap()
        });
        let migration = SlotMigration {
            source: admin(source),
            target: admin(target),
            target_port: target,
            others: admins
                .iter()
                .filter(|(p, _)| *p != source && *p != target)
                .map(|(_, c)| c)
                .collect(),
        };
        migration.open(slot).await;
        migrations.push((path, slot, migration));
    }
    let calls = origin.calls();

    // Open, the keys on the old owner: reads hit there, purges run there.
    for path in [small, large, split] {
        assert_hit(&send(&svc, get(path)).await);
    }
    assert_write_purges(&svc, early, 1).await;
    // A resource on neither node can be neither read nor leased until the
    // slot's move ends (ASK, then TRYAGAIN): the origin answers, nothing
    // is stored; its purge completes (its two keys purged one by one).
    for path in [gone, early] {
        let reply = send(&svc, get(path)).await;
        assert_eq!(reply.cache_status(), miss("store-error"), "{path}");
        assert_eq!(reply.text(), body_for(path));
        assert_write_purges(&svc, path, 0).await;
    }
    assert_eq!(origin.calls(), calls + 5);

    // `split`'s hash moves, its expiry set not yet: a script on both is
    // TRYAGAIN on either node, but a hinted read is on the hash alone (it
    // follows it, and hits); the purge completes key by key.
    let (_, _, splitting) = migrations.iter().find(|(p, _, _)| *p == split).unwrap();
    splitting.move_key(&format!("t:m:{{{split}}}")).await;
    let reply = send(&svc, get(split)).await;
    assert_hit(&reply);
    assert_eq!(reply.text(), body_for(split));
    assert_write_purges(&svc, split, 1).await;
    for (port, client) in &admins {
        let left = support::scan_keys(client, "t:m:{/m/3*").await;
        assert!(left.is_empty(), "{split} left on {port}: {left:?}");
    }

    for (_, slot, migration) in &migrations {
        migration.move_keys(*slot).await;
    }
    // Open, the keys on the new owner: every command meets ASK. Reads
    // through both instances still hit, and so do scripts the new owner
    // does not know (`NOSCRIPT` after `ASKING`).
    let other = layer_on(cluster.store().await).layer(origin.service());
    for (port, client) in &admins {
        let flushed: String = support::admin(client, &["SCRIPT", "FLUSH"])
            .await
            .unwrap_or_else(|e| panic!("{port}: SCRIPT FLUSH: {e}"));
        assert_eq!(flushed, "OK");
    }
    let calls = origin.calls();
    for path in [small, large] {
        for (instance, svc) in [("this", &svc), ("another", &other)] {
            let reply = send(svc, get(path)).await;
            assert_hit(&reply);
            assert_eq!(
                reply.text(),
                body_for(path),
                "{path} through {instance} instance"
            );
        }
    }
    assert_eq!(origin.calls(), calls, "hits");
    assert_write_purges(&svc, small, 1).await;
    assert_eq!(
        send(&other, get(small)).await.cache_status(),
        miss("store-error")
    );
    // A glob purge finds the keys on the new owner (which fred does not
    // scan when it owns no slot yet).
    let removed = layer.purger().purge_glob("/m/*").await.unwrap();
    assert_eq!(removed, 1, "{large}, on its new owner");
    for (port, client) in &admins {
        let left = support::scan_keys(client, "t:m:*").await;
        assert!(
            left.is_empty(),
            "left on {port} by the glob purge: {left:?}"
        );
    }

    // Closed: MOVED, then everything as before.
    for (_, slot, migration) in &migrations {
        migration.close(*slot).await;
    }
    let puts = store.stats().puts_finished();
    for path in paths {
        assert_eq!(send(&svc, get(path)).await.cache_status(), STORED, "{path}");
    }
    store.wait_puts(puts + paths.len()).await;
    for path in paths {
        assert_hit(&send(&svc, get(path)).await);
        assert_hit(&send(&other, get(path)).await);
    }
    assert_write_purges(&svc, large, 1).await;
    let removed = layer.purger().purge_glob("/m/*").await.unwrap();
    assert_eq!(removed, 4, "all but {large}, on their new owners");
    for (port, client) in &admins {
        let left = support::scan_keys(client, "t:m:*").await;
        assert!(left.is_empty(), "left on {port}: {left:?}");
    }
}

#[tokio::test]
async fn every_read_and_purge_follows_a_slot_to_another_primary() {
    follows_a_migration(Target::OtherPrimary).await;
}

#[tokio::test]
async fn every_read_and_purge_follows_a_slot_to_a_node_added_empty() {
    follows_a_migration(Target::NewNode).await;
}
