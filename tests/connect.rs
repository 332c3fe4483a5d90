//! Connecting to Redis as deployments do: an ACL user with a password and
//! a key pattern limited to the crate's prefixes, a wrong password, and a
//! server that is down at start-up. Each test starts its own
//! `redis-server` on a loopback port.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::types::Value;
use http::{Method, StatusCode};
use tower::Layer;
use tower_cache_aside::{Cache, CacheAsideLayer, RedisStore};

use support::{assert_hit, get, request, send, CountingStore, Origin, RedisServer, STORED};

/// The ACL rules the README gives for the crate's user, after `ACL
/// SETUSER <name> on ><password>`: the default prefixes' keys, the events
/// channel, and the command groups the store's scripts and reads use.
const ACL_RULES: &[&str] = &[
    "resetkeys",
    "~tca:*",
    "resetchannels",
    "&tower-cache-aside:*",
    "-@all",
    "+@connection",
    "+@hash",
    "+@sortedset",
    "+@scripting",
    "+@pubsub",
    "+type",
    "+del",
    "+unlink",
    "+pexpire",
    "+pttl",
    "+scan",
    "+time",
    "+info",
];

/// Adds the user `cache` with password `s3cret` and the README's rules.
async fn add_cache_user(server: &RedisServer) -> fred::clients::Client {
    let admin = support::fred_client(&server.url()).await;
    let mut args = vec!["ACL", "SETUSER", "cache", "on", ">s3cret"];
    args.extend(ACL_RULES);
    let _: Value = support::admin(&admin, &args).await.expect("ACL SETUSER");
    let _: Value = support::admin(&admin, &["ACL", "LOG", "RESET"])
        .await
        .expect("ACL LOG RESET");
    admin
}

#[tokio::test]
async fn an_acl_user_limited_to_the_prefixes_is_enough() {
    let server = RedisServer::launch();
    let admin = add_cache_user(&server).await;
    let url = format!("redis://cache:s3cret@127.0.0.1:{}", server.port());
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&url)
            .await
            .expect("connect as the ACL user"),
    ));

    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let origin = Origin::text("user");
    let svc = layer.layer(origin.service());
    assert_eq!(send(&svc, get("/users/1")).await.cache_status(), STORED);
    store.wait_puts(1).await;
    assert_hit(&send(&svc, get("/users/1")).await);
    let write = send(&svc, request(Method::PUT, "/users/1", &[])).await;
    assert_eq!(write.status, StatusCode::OK);
    assert!(
        write.cache_status().ends_with("purged=1"),
        "{}",
        write.cache_status()
    );
    assert_eq!(layer.purger().purge_glob("/users/*").await.unwrap(), 0);

    let cache = Cache::builder(store.as_dyn()).build().unwrap();
    let value: Option<String> = cache
        .get_or_fetch("item:1", Duration::from_secs(60), || async {
            Ok::<_, Infallible>(Some("one".to_owned()))
        })
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("one"));
    cache.invalidate("item:1").await.unwrap();

    let denied: Value = support::admin(&admin, &["ACL", "LOG"])
        .await
        .expect("ACL LOG");
    assert!(
        matches!(&denied, Value::Array(entries) if entries.is_empty()),
        "commands the ACL denied: {denied:?}"
    );
    let _ = admin.quit().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_at_connect() {
    let server = RedisServer::launch();
    let admin = add_cache_user(&server).await;
    let url = format!("redis://cache:wrong@127.0.0.1:{}", server.port());
    let result = tokio::time::timeout(Duration::from_secs(20), RedisStore::connect(&url))
        .await
        .expect("connect gives up rather than retry a refused password");
    let error = result.expect_err("a wrong password is refused");
    let text = error.to_string();
    assert!(
        text.contains("WRONGPASS") || text.contains("invalid username-password"),
        "{text}"
    );
    let _ = admin.quit().await;
}

/// A store made with `connect_lazy` while the password is wrong, or the
/// server is down, is a layer that passes requests through, never one that
/// fails them.
#[tokio::test]
async fn a_lazy_store_that_cannot_authenticate_passes_requests_through() {
    let server = RedisServer::launch();
    let admin = add_cache_user(&server).await;
    let url = format!("redis://cache:wrong@127.0.0.1:{}", server.port());
    let store = RedisStore::connect_lazy(&url).expect("a valid URL");
    support::assert_passes_through(store, 8).await;
    let _ = admin.quit().await;
}
