//! Redis behind Sentinel: one primary, one replica and three sentinels,
//! started by this binary on free loopback ports, and two instances of the
//! layer connected by a `redis-sentinel://` URL with replicated purges.
//!
//! - `SENTINEL FAILOVER` during a write-and-read load: no failed request,
//!   no read staler than an acknowledged write (on the writing instance,
//!   every write; on the other, every write whose purge was acknowledged),
//!   and caching resumes on the new primary; the time it takes is printed.
//! - A replica that stops replicating: a purge it does not hold is not
//!   acknowledged (`purge-failed`), its path is not served from the
//!   writer's cache meanwhile, and once the replica is back the retried
//!   purge lands and the path is cached again.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, Value};
use http::{Method, Request, Response, StatusCode};
use tower::Layer;
use tower_cache_aside::{CacheAsideLayer, RedisStore};

use support::{
    assert_hit, get, request, send, CountingStore, Origin, RedisServer, Reply, Sentinel, TestBody,
    STORED,
};

/// The Sentinel service name.
const SERVICE: &str = "mymaster";
/// Items the load reads and writes.
const ITEMS: usize = 16;
/// The safety net of a whole failover scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);
/// The safety net of every wait on the servers' state.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

async fn command(client: &Client, args: &[&str]) -> Result<Value, fred::error::Error> {
    let (name, rest) = args.split_first().expect("a command");
    let rest: Vec<String> = rest.iter().map(|a| a.to_string()).collect();
    let sent = client.custom(CustomCommand::new(name.to_string(), None, false), rest);
    // A look at the state gets 5 s; a WAIT, the time it asks for and more.
    let limit = if *name == "WAIT" { 40 } else { 5 };
    match tokio::time::timeout(Duration::from_secs(limit), sent).await {
        Ok(result) => result,
        Err(_) => Err(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            format!("{name}: no reply"),
        )),
    }
}

/// Polls `check` until it holds: the servers' replication and Sentinel
/// state has no signal to await, only a state to read.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < STATE_TIMEOUT, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A primary, its replica (in sync), and three sentinels that know both.
struct Deployment {
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

impl Deployment {
    async fn start() -> Deployment {
        // A full sync starts at once, not after the default 5 s wait for
        // more replicas.
        let now = || vec!["--repl-diskless-sync-delay".to_string(), "0".to_string()];
        let primary = RedisServer::launch_with(|_| now());
        let primary_port = primary.port();
        let replica = RedisServer::launch_with(move |_| {
            let mut args = now();
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ]);
            args
        });
        // WAIT returns once the replica holds the primary's writes: the
        // signal that it is in sync.
        let admin = support::fred_client(&primary.url()).await;
        command(&admin, &["SET", "sync", "1"]).await.unwrap();
        let synced = command(&admin, &["WAIT", "1", "30000"]).await.unwrap();
        assert_eq!(synced, Value::Integer(1), "the replica syncs");
        let _ = admin.quit().await;
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::launch(SERVICE, primary_port))
            .collect();
        for sentinel in &sentinels {
            let client = support::fred_client(&sentinel.url()).await;
            until(
                "every sentinel knows the replica and the others",
                || async {
                    let replicas = command(&client, &["SENTINEL", "REPLICAS", SERVICE]).await;
                    let others = command(&client, &["SENTINEL", "SENTINELS", SERVICE]).await;
                    matches!((replicas, others), (Ok(Value::Array(r)), Ok(Value::Array(o)))
                    if r.len() == 1 && o.len() == 2)
                },
            )
            .await;
            let _ = client.quit().await;
        }
        Deployment {
            primary,
            replica,
            sentinels,
        }
    }

    fn url(&self) -> String {
        let others: Vec<String> = self.sentinels[1..]
            .iter()
            .map(|s| format!("node=127.0.0.1:{}", s.port()))
            .collect();
        format!(
            "redis-sentinel://127.0.0.1:{}?{}&sentinelServiceName={SERVICE}",
            self.sentinels[0].port(),
            others.join("&")
        )
    }

    /// The primary's port as the first sentinel says.
    async fn primary_port(&self, sentinel: &Client) -> Option<u16> {
        let reply = command(sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
            .await
            .ok()?;
        let Value::Array(parts) = reply else {
            return None;
        };
        parts.get(1)?.as_str()?.parse().ok()
    }
}

/// Items whose version each write bumps; reads answer the current one.
fn versioned_origin(versions: Arc<Vec<AtomicU64>>) -> Origin {
    Origin::new(move |req: &Request<()>| {
        let item: usize = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0)
            % ITEMS;
        let version = if req.method() == Method::PUT {
            versions[item].fetch_add(1, Ordering::SeqCst) + 1
        } else {
            versions[item].load(Ordering::SeqCst)
        };
        Response::builder()
            .header("content-type", "text/plain")
            .body(TestBody::full(version.to_string()))
            .expect("response")
    })
}

fn version_of(reply: &Reply) -> u64 {
    reply
        .text()
        .parse()
        .unwrap_or_else(|_| panic!("a version, got {:?}", reply.text()))
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    failed: AtomicUsize,
    stale: AtomicUsize,
    purge_failed: AtomicUsize,
    hits: AtomicUsize,
    /// The first stale reads, told.
    examples: std::sync::Mutex<Vec<String>>,
}

/// Runs the load on two instances through a `SENTINEL FAILOVER`, with
/// purges replicated or not, and says what it saw.
async fn failover_under_load(replicated: bool) -> Arc<Seen> {
    let deployment = Deployment::start().await;
    let url = deployment.url();
    let connect = || async {
        let builder = RedisStore::builder(&url);
        let builder = if replicated {
            builder.replicated_purges(1, Duration::from_millis(500))
        } else {
            builder
        };
        builder
            .connect()
            .await
            .expect("connect through the sentinels")
    };
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..ITEMS).map(|_| AtomicU64::new(0)).collect());
    let origin = versioned_origin(versions.clone());
    let layer = |store: Arc<dyn tower_cache_aside::Store>| {
        CacheAsideLayer::builder(store)
            .store_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    // The writer's store counts its fills: the probe after the failover
    // awaits one.
    let writer_store = CountingStore::new(Arc::new(connect().await));
    let writer = layer(writer_store.as_dyn()).layer(origin.service());
    let reader = layer(Arc::new(connect().await)).layer(origin.service());

    // The version of each item whose write has returned (any write, for
    // the writing instance) and whose purge was acknowledged (for the
    // other instance).
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..ITEMS).map(|_| AtomicU64::new(0)).collect());
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..ITEMS).map(|_| AtomicU64::new(0)).collect());
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Writes go on until the old primary is demoted; then only reads, so
    // that an entry a lost purge let back would be read, not overwritten.
    let writing = Arc::new(AtomicBool::new(true));

    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..6usize {
        let (writer, reader) = (writer.clone(), reader.clone());
        let (written, acknowledged) = (written.clone(), acknowledged.clone());
        let (seen, stop, writing) = (seen.clone(), stop.clone(), writing.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 500,000 requests a task, and until told.
            for n in 0..500_000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let item = (n * 7 + task) % ITEMS;
                let path = format!("/items/{item}");
                let reply = if task == 0 && n % 4 == 0 && writing.load(Ordering::SeqCst) {
                    let reply = send(&writer, request(Method::PUT, &path, &[])).await;
                    if reply.status == StatusCode::OK {
                        let version = version_of(&reply);
                        written[item].fetch_max(version, Ordering::SeqCst);
                        if reply.cache_status().contains("purge-failed") {
                            seen.purge_failed.fetch_add(1, Ordering::SeqCst);
                        } else {
                            acknowledged[item].fetch_max(version, Ordering::SeqCst);
                        }
                    }
                    reply
                } else {
                    // Even tasks read on the writing instance, odd ones on
                    // the other.
                    let (svc, floor) = if task % 2 == 0 {
                        (&writer, written[item].load(Ordering::SeqCst))
                    } else {
                        (&reader, acknowledged[item].load(Ordering::SeqCst))
                    };
                    let reply = send(svc, get(&path)).await;
                    if reply.status == StatusCode::OK && version_of(&reply) < floor {
                        seen.stale.fetch_add(1, Ordering::SeqCst);
                        let mut examples = seen.examples.lock().unwrap();
                        if examples.len() < 8 {
                            examples.push(format!(
                                "{:?} {} {path}: read {} < {floor}, {}",
                                epoch.elapsed(),
                                if task % 2 == 0 { "writer" } else { "reader" },
                                version_of(&reply),
                                reply.cache_status()
                            ));
                        }
                    }
                    if reply.is_hit() {
                        seen.hits.fetch_add(1, Ordering::SeqCst);
                    }
                    reply
                };
                seen.requests.fetch_add(1, Ordering::SeqCst);
                if reply.status != StatusCode::OK {
                    seen.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    // Load first, with hits, then the failover.
    until("the load hits the cache", || async {
        seen.hits.load(Ordering::SeqCst) > 200
    })
    .await;
    let sentinel = support::fred_client(&deployment.sentinels[0].url()).await;
    let old_primary = deployment.primary.port();
    let new_primary = deployment.replica.port();
    let failover_at = Instant::now();
    let before = seen.requests.load(Ordering::SeqCst);
    until("the sentinel starts a failover", || async {
        command(&sentinel, &["SENTINEL", "FAILOVER", SERVICE])
            .await
            .is_ok()
    })
    .await;
    until("the sentinels name the new primary", || async {
        deployment.primary_port(&sentinel).await == Some(new_primary)
    })
    .await;
    let switched = failover_at.elapsed();
    // Sentinel turns the old primary into a replica when it next reads
    // its INFO (up to 10 s), closing its clients: the stores reconnect
    // through the sentinels then.
    until("the old primary follows the new one", || async {
        // A client per look: the old primary closes its clients, and a
        // connection made as it does may fail (a look that says "not yet").
        let Ok(admin) = support::try_fred_client(&deployment.primary.url()).await else {
            return false;
        };
        let role = command(&admin, &["ROLE"]).await;
        let _ = admin.quit().await;
        matches!(role, Ok(Value::Array(parts))
            if parts.first().and_then(Value::as_str).as_deref() == Some("slave"))
    })
    .await;
    let demoted = failover_at.elapsed();
    writing.store(false, Ordering::SeqCst);

    // Caching resumes: a path never read before is stored on the new
    // primary, through the writer's store, and then hit.
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        let path = format!("/resume/{attempt}");
        if send(&writer, get(&path)).await.cache_status() == STORED {
            writer_store.wait_puts_for(&path, 1).await;
            if send(&writer, get(&path)).await.is_hit() {
                break;
            }
        }
        assert!(
            failover_at.elapsed() < STATE_TIMEOUT,
            "caching did not resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = failover_at.elapsed();
    let during = seen.requests.load(Ordering::SeqCst) - before;

    // More load on the new primary, then stop.
    let hits_after = seen.hits.load(Ordering::SeqCst);
    until("the load hits the new primary", || async {
        seen.hits.load(Ordering::SeqCst) > hits_after + 1000
    })
    .await;
    let resumed = failover_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a load task");
    }

    eprintln!(
        "sentinel failover (replicated purges: {replicated}): new primary named after \
         {switched:?}, old primary demoted after {demoted:?}, a new entry stored and hit on \
         the new primary after {stored:?} ({attempt} probe(s)), 1000 more hits of the load \
         after {resumed:?}; {during} requests from the failover to the new entry; {} requests \
         in all, {} failed, {} stale, {} writes with purge-failed, {} hits",
        seen.requests.load(Ordering::SeqCst),
        seen.failed.load(Ordering::SeqCst),
        seen.stale.load(Ordering::SeqCst),
        seen.purge_failed.load(Ordering::SeqCst),
        seen.hits.load(Ordering::SeqCst),
    );
    assert_ne!(old_primary, new_primary);

    if replicated {
        // A write on the new primary purges, acknowledged by the old
        // primary once it has synced as the new one's replica.
        let admin = support::fred_client(&deployment.replica.url()).await;
        command(&admin, &["SET", "sync", "3"]).await.unwrap();
        let synced = command(&admin, &["WAIT", "1", "30000"]).await.unwrap();
        assert_eq!(synced, Value::Integer(1), "the old primary syncs");
        let _ = admin.quit().await;
        let write = send(&writer, request(Method::PUT, "/items/1", &[])).await;
        assert_eq!(write.status, StatusCode::OK);
        assert!(
            write.cache_status().contains("purged="),
            "{}",
            write.cache_status()
        );
        assert!(
            !write.cache_status().contains("purge-failed"),
            "{}",
            write.cache_status()
        );
    }
    let _ = sentinel.quit().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_loses_no_request_and_no_purge() {
    let seen = tokio::time::timeout(SCENARIO_TIMEOUT, failover_under_load(true))
        .await
        .expect("the failover scenario ends");
    assert_eq!(seen.failed.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(
        seen.stale.load(Ordering::SeqCst),
        0,
        "stale reads: {:#?}",
        seen.examples.lock().unwrap()
    );
}

/// The control: with purges acknowledged by the primary alone, the purges
/// the old primary took after the replica's promotion are lost when it
/// turns replica, and the entries they removed come back from the new
/// primary: stale reads. What `replicated_purges` is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replicated_purges_a_failover_loses_purges() {
    let seen = tokio::time::timeout(SCENARIO_TIMEOUT, failover_under_load(false))
        .await
        .expect("the failover scenario ends");
    assert_eq!(seen.failed.load(Ordering::SeqCst), 0, "failed requests");
    assert!(
        seen.stale.load(Ordering::SeqCst) > 0,
        "no stale read: the control did not lose a purge"
    );
}

/// A purge the replica does not hold is not acknowledged, and fences its
/// path on the writing instance until the retry lands.
#[tokio::test]
async fn a_purge_no_replica_holds_is_not_acknowledged() {
    let deployment = Deployment::start().await;
    let store = CountingStore::new(Arc::new(
        RedisStore::builder(&deployment.url())
            .replicated_purges(1, Duration::from_millis(200))
            .connect()
            .await
            .expect("connect through the sentinels"),
    ));
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..ITEMS).map(|_| AtomicU64::new(0)).collect());
    let origin = versioned_origin(versions);
    let svc = layer.layer(origin.service());

    assert_eq!(send(&svc, get("/items/3")).await.cache_status(), STORED);
    store.wait_puts(1).await;
    assert_hit(&send(&svc, get("/items/3")).await);
    let write = send(&svc, request(Method::PUT, "/items/3", &[])).await;
    assert!(
        write.cache_status().ends_with("purged=1"),
        "{}",
        write.cache_status()
    );

    // The replica stops: purges reach no replica.
    let primary = support::fred_client(&deployment.primary.url()).await;
    deployment.replica.stop();
    until("the primary has no replica", || async {
        let info = command(&primary, &["INFO", "replication"]).await;
        matches!(info, Ok(v) if v.as_str().is_some_and(|s| s.contains("connected_slaves:0")))
    })
    .await;
    assert_eq!(send(&svc, get("/items/3")).await.cache_status(), STORED);
    store.wait_puts(2).await;
    let write = send(&svc, request(Method::PUT, "/items/3", &[])).await;
    assert_eq!(write.status, StatusCode::OK);
    assert!(
        write.cache_status().contains("purge-failed"),
        "a purge no replica holds is acknowledged: {}",
        write.cache_status()
    );
    // Fenced meanwhile: served by the origin, never from the cache.
    for _ in 0..3 {
        let reply = send(&svc, get("/items/3")).await;
        assert!(!reply.is_hit(), "{}", reply.cache_status());
        assert_eq!(version_of(&reply), 2);
    }

    // The replica is back (it starts as the primary's replica again): the
    // retried purge lands, and the path is cached again.
    deployment.replica.start();
    command(&primary, &["SET", "sync", "2"]).await.unwrap();
    let synced = command(&primary, &["WAIT", "1", "30000"]).await.unwrap();
    assert_eq!(synced, Value::Integer(1));
    let start = Instant::now();
    loop {
        let filled = store.puts_finished_for("/items/3");
        let reply = send(&svc, get("/items/3")).await;
        if reply.is_hit() {
            assert_eq!(version_of(&reply), 2);
            break;
        }
        assert!(
            start.elapsed() < STATE_TIMEOUT,
            "the retried purge never landed"
        );
        if reply.cache_status() == STORED {
            store.wait_puts_for("/items/3", filled + 1).await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = primary.quit().await;
}
