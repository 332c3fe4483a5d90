//! `rediss-sentinel://` and `rediss-cluster://`: a TLS-only primary with a
//! TLS replica behind a TLS sentinel, and a three-primary TLS Cluster
//! (`tls-cluster yes`), with certificates the test makes. The store
//! reaches each through its URL and the test's CA, with `connect` and
//! `connect_lazy`, and caches and purges there.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;
use tower_cache_aside::{CacheAsideLayer, RedisStore};

use support::cluster::ClusterNodes;
use support::pki::Pki;
use support::{get, send, CountingStore, Origin, RedisServer, Sentinel, STORED};

/// `connect`, then `connect_lazy` (awaited through its first stored
/// fill), on `url`, trusting only the test's CA.
async fn both_ways(pki: &Pki, url: &str, what: &str) {
    let store = RedisStore::builder(url)
        .tls_system_roots(false)
        .tls_ca_pem(&pki.ca.cert)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    support::caches_and_purges(store, &format!("/{what}/connect")).await;
    let lazy = RedisStore::builder(url)
        .tls_system_roots(false)
        .tls_ca_pem(&pki.ca.cert)
        .connect_lazy()
        .unwrap_or_else(|e| panic!("{what}: connect_lazy: {e}"));
    // Until it connects the layer passes requests through: wait for a
    // stored fill, bounded.
    let store = CountingStore::new(Arc::new(lazy.clone()));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let origin = Origin::text("user");
    let svc = layer.layer(origin.service());
    let start = std::time::Instant::now();
    let path = format!("/{what}/lazy-probe");
    while send(&svc, get(&path)).await.cache_status() != STORED {
        assert!(
            start.elapsed() < support::SIGNAL_TIMEOUT,
            "{what}: connect_lazy never connected"
        );
        // No event says the background connection is up; look again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::caches_and_purges(lazy, &format!("/{what}/lazy")).await;
}

#[tokio::test]
async fn rediss_sentinel_follows_a_tls_primary() {
    let pki = Pki::new();
    let tls = |port: u16| {
        let mut args = pki.server_args(port, false);
        args.extend([
            "--tls-replication".into(),
            "yes".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ]);
        args
    };
    let primary = RedisServer::launch_with(tls);
    let primary_port = primary.port();
    let _replica = RedisServer::launch_with(|port| {
        let mut args = tls(port);
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ]);
        args
    });
    let sentinel = Sentinel::launch_with("tlsmaster", primary_port, |port| {
        format!(
            "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
            pki.path("ca.pem").display(),
        )
    });
    let url = format!(
        "rediss-sentinel://127.0.0.1:{}?sentinelServiceName=tlsmaster",
        sentinel.port()
    );
    both_ways(&pki, &url, "sentinel").await;
}

#[tokio::test]
async fn rediss_cluster_reaches_every_tls_primary() {
    let pki = Pki::new();
    let cli: Vec<String> = [
        "--tls".to_string(),
        "--cacert".to_string(),
        pki.path("ca.pem").display().to_string(),
    ]
    .to_vec();
    let cluster = ClusterNodes::start_with(
        3,
        0,
        |port| {
            let mut args = pki.server_args(port, false);
            args.extend(["--tls-cluster".into(), "yes".into()]);
            args
        },
        &cli,
    );
    let url = cluster
        .url()
        .replacen("redis-cluster://", "rediss-cluster://", 1);
    both_ways(&pki, &url, "cluster").await;
    // A glob purge scans every primary over TLS.
    let store = CountingStore::new(Arc::new(
        RedisStore::builder(&url)
            .tls_system_roots(false)
            .tls_ca_pem(&pki.ca.cert)
            .connect()
            .await
            .expect("connect"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn()).build().unwrap();
    let origin = Origin::text("user");
    let svc = layer.layer(origin.service());
    for n in 0..30 {
        assert_eq!(
            send(&svc, get(&format!("/spread/{n}")))
                .await
                .cache_status(),
            STORED
        );
    }
    store.wait_puts(30).await;
    let removed = layer.purger().purge_glob("/spread/*").await.unwrap();
    assert_eq!(removed, 30, "the glob purge over TLS");
}
