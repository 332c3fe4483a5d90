//! The layer over a Redis Cluster whose topology changes under load: three
//! primaries with one replica each, started by each test on free loopback
//! ports. While concurrent GETs and PUTs (each PUT bumps the item's version
//! at the origin and purges it) run through `CacheAsideLayer` over
//! `RedisStore`, one test
//!
//! fails a primary over to its replica with `CLUSTER FAILOVER` (the
//! planned, coordinated failover), and the other
//!
//! migrates every slot that holds items of one primary to another, by hand
//! as `redis-cli --cluster reshard` does it (`CLUSTER SETSLOT ...
//! IMPORTING` and `MIGRATING`, `GETKEYSINSLOT` and `MIGRATE`, then
//! `SETSLOT ... NODE` on every primary), holding the slots open while the
//! load runs, before the keys move and after: requests meet `ASK` and
//! `TRYAGAIN`, then `MOVED`.
//!
//! It proves that no request fails (every response is a 200 with a well
//! formed body), that no GET started after a PUT was acknowledged returns
//! an older version than that PUT's, that purges still complete after the
//! change (during a migration, none fails), that caching resumes (a GET
//! is a hit again), that a second instance still hears the purges
//! announced (the events channel), and that a glob purge afterwards
//! removes the entries on every primary, which held some before. It prints how long caching took to resume after the change and
//! how many requests were served meanwhile; it asserts no timing.

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, FromValue, Value};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{Layer, Service};
use tower_cache_aside::{CacheAsideLayer, RedisStore};

use support::cluster::{ClusterNodes, SlotMigration};
use support::{
    assert_hit, get, request, scan_keys, send, CountingStore, Origin, Reply, TestBody,
    SIGNAL_TIMEOUT, STORED,
};

/// Items `/items/0` to `/items/49`.
const ITEMS: usize = 50;
/// Concurrent clients of the load.
const WORKERS: usize = 8;
/// The load's bounds: requests in all, and time.
const MAX_REQUESTS: usize = 300_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(120);
/// Requests on the moved items the test waits for before the change.
const DWELL: usize = 10;
/// The safety net of a wait on the cluster's state.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);
/// Every key of the layer's items (default prefix `tca:`).
const ITEM_KEYS: &str = "tca:{/items/*";

fn path_of(item: usize) -> String {
    format!("/items/{item}")
}

/// The slot of an item's keys (`tca:{/items/<i>}` and its `:t` set).
fn slot_of(item: usize) -> u16 {
    fred::util::redis_keyslot(format!("tca:{{{}}}", path_of(item)).as_bytes())
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

/// Six cluster nodes (three primaries, three replicas once joined), a plain
/// client of each for administration; config files removed on drop.
struct Cluster {
    nodes: ClusterNodes,
    admins: Vec<Client>,
}

/// One node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeView {
    id: String,
    port: u16,
    /// The primary's id, for a replica.
    primary: Option<String>,
    /// Slot ranges (inclusive), for a primary.
    slots: Vec<(u16, u16)>,
}

/// The cluster as one node sees it, nodes sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Topology {
    nodes: Vec<NodeView>,
}

impl Topology {
    fn parse(text: &str) -> Topology {
        let mut nodes: Vec<NodeView> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert!(fields.len() >= 8, "CLUSTER NODES line {line:?}");
                let address = fields[1].split(['@', ',']).next().unwrap_or_default();
                let port = address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("port in {line:?}"));
                let primary = fields[2]
                    .split(',')
                    .any(|flag| flag == "slave")
                    .then(|| fields[3].to_owned());
                let slots = fields[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    })
                    .collect();
                NodeView {
                    id: fields[0].to_owned(),
                    port,
                    primary,
                    slots,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Topology { nodes }
    }

    fn primaries(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.primary.is_none())
    }

    fn owner(&self, slot: u16) -> &NodeView {
        self.primaries()
            .find(|n| n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no owner of slot {slot} in {self:?}"))
    }

    fn replica_of(&self, id: &str) -> &NodeView {
        self.nodes
            .iter()
            .find(|n| n.primary.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no replica of {id} in {self:?}"))
    }

    /// Why this is not three primaries covering every slot, each with one
    /// replica.
    fn shape_problem(&self) -> Option<String> {
        let primaries: Vec<&NodeView> = self.primaries().collect();
        if primaries.len() != 3 || self.nodes.len() != 6 {
            return Some(format!(
                "{} primaries of {}",
                primaries.len(),
                self.nodes.len()
            ));
        }
        let covered: u32 = primaries
            .iter()
            .flat_map(|p| &p.slots)
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        if covered != 16384 {
            return Some(format!("{covered} slots assigned"));
        }
        for primary in &primaries {
            let replicas = self
                .nodes
                .iter()
                .filter(|n| n.primary.as_deref() == Some(&primary.id))
                .count();
            if replicas != 1 || primary.slots.is_empty() {
                return Some(format!("{} has {replicas} replicas", primary.port));
            }
        }
        None
    }
}

fn custom(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, None, false)
}

/// One command on one node.
async fn run<R: FromValue>(
    client: &Client,
    name: &'static str,
    args: Vec<Value>,
) -> Result<R, fred::error::Error> {
    client.custom(custom(name), args).await
}

fn args(parts: &[&str]) -> Vec<Value> {
    parts.iter().map(|p| Value::from(p.to_string())).collect()
}

impl Cluster {
    async fn start() -> Cluster {
        // The first three become primaries, the others their replicas.
        let mut cluster = Cluster {
            nodes: ClusterNodes::start(6, 1),
            admins: Vec::new(),
        };
        for node in &cluster.nodes.nodes {
            cluster.admins.push(support::fred_client(&node.url()).await);
        }
        cluster
    }

    fn url(&self) -> String {
        self.nodes.url()
    }

    /// The plain client of the node on `port`.
    fn admin(&self, port: u16) -> &Client {
        let at = self
            .nodes
            .nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        &self.admins[at]
    }

    /// The topology if the cluster is settled: every node says
    /// `cluster_state:ok` and lists the same nodes, roles and slots (three
    /// primaries, each with one replica), every replica's link to its
    /// primary is up, and `redis-cli --cluster check` finds every slot
    /// covered and none open.
    async fn settled(&self) -> Result<Topology, String> {
        let mut views = Vec::new();
        for (node, admin) in self.nodes.nodes.iter().zip(&self.admins) {
            let port = node.port();
            let info: String = run(admin, "CLUSTER", args(&["INFO"]))
                .await
                .map_err(|e| format!("{port}: CLUSTER INFO: {e}"))?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("{port}: not cluster_state:ok"));
            }
            let text: String = run(admin, "CLUSTER", args(&["NODES"]))
                .await
                .map_err(|e| format!("{port}: CLUSTER NODES: {e}"))?;
            views.push(Topology::parse(&text));
        }
        let topology = views[0].clone();
        if let Some(other) = views.iter().position(|v| *v != topology) {
            return Err(format!(
                "nodes {} and {} disagree",
                self.nodes.nodes[0].port(),
                self.nodes.nodes[other].port()
            ));
        }
        if let Some(problem) = topology.shape_problem() {
            return Err(problem);
        }
        for view in &topology.nodes {
            let info: String = run(self.admin(view.port), "INFO", args(&["replication"]))
                .await
                .map_err(|e| format!("{}: INFO replication: {e}", view.port))?;
            let ready = match view.primary {
                None => info.contains("role:master"),
                Some(_) => info.contains("role:slave") && info.contains("master_link_status:up"),
            };
            if !ready {
                return Err(format!("{}: replication not ready", view.port));
            }
        }
        let check = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "check"])
            .arg(format!("127.0.0.1:{}", self.nodes.nodes[0].port()))
            .output()
            .await
            .expect("run redis-cli");
        let report = String::from_utf8_lossy(&check.stdout);
        let good = report.contains("[OK] All nodes agree about slots configuration.")
            && report.contains("[OK] All 16384 slots covered.")
            && !report.contains("[ERR]")
            && !report.contains("[WARNING]");
        if !good {
            return Err(format!("redis-cli --cluster check:\n{report}"));
        }
        Ok(topology)
    }

    /// Waits (polling, bounded) until the cluster is settled and `done`
    /// holds of its topology.
    async fn wait_settled(&self, what: &str, done: impl Fn(&Topology) -> bool) -> Topology {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let why = match self.settled().await {
                Ok(topology) if done(&topology) => return topology,
                Ok(topology) => format!("not yet: {topology:?}"),
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "{what}: the cluster did not settle within {SETTLE_TIMEOUT:?}: {why}"
            );
            // No event announces it; poll.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The layer's item keys (hashes, not `:t` sets) on each primary.
    async fn item_hashes(&self, topology: &Topology) -> Vec<(u16, usize)> {
        let mut out = Vec::new();
        for primary in topology.primaries() {
            let keys = scan_keys(self.admin(primary.port), ITEM_KEYS).await;
            out.push((
                primary.port,
                keys.iter().filter(|k| k.ends_with('}')).count(),
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

/// One request of the load, once its response was read.
struct Served {
    item: usize,
    start: Instant,
    end: Instant,
    put: bool,
    hit: bool,
    /// Its `Cache-Status`, numbers left out.
    status: String,
}

/// The origin's items and what the load saw.
struct Load {
    started: Instant,
    /// The origin's current version of each item.
    versions: Vec<AtomicU64>,
    /// Per item, the highest version a PUT returned once its response
    /// came back (its purge acknowledged).
    acked: Vec<AtomicU64>,
    requests: AtomicUsize,
    stop: AtomicBool,
    log: Mutex<Vec<Served>>,
    /// Bumped on each completed request; waits look at the log.
    served: tokio::sync::watch::Sender<usize>,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn new() -> Arc<Load> {
        Arc::new(Load {
            started: Instant::now(),
            versions: (0..ITEMS).map(|_| AtomicU64::new(1)).collect(),
            acked: (0..ITEMS).map(|_| AtomicU64::new(0)).collect(),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            served: tokio::sync::watch::Sender::new(0),
            failures: Mutex::new(Vec::new()),
        })
    }

    /// The origin: `item=<i> version=<v>`; a PUT bumps the version first.
    fn origin(self: &Arc<Self>) -> Origin {
        let load = self.clone();
        Origin::new(move |req| {
            let item: usize = req
                .uri()
                .path()
                .strip_prefix("/items/")
                .and_then(|i| i.parse().ok())
                .filter(|&i| i < ITEMS)
                .expect("an item path");
            let version = if req.method() == Method::PUT {
                load.versions[item].fetch_add(1, Ordering::SeqCst) + 1
            } else {
                load.versions[item].load(Ordering::SeqCst)
            };
            Response::builder()
                .header("content-type", "text/plain")
                .body(TestBody::full(format!("item={item} version={version}")))
                .expect("response")
        })
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
            && self.requests.fetch_add(1, Ordering::SeqCst) < MAX_REQUESTS
            && self.started.elapsed() < MAX_LOAD_TIME
    }

    fn fail(&self, failure: String) {
        self.failures.lock().unwrap().push(failure);
    }

    fn record(&self, served: Served) {
        self.log.lock().unwrap().push(served);
        self.served.send_modify(|n| *n += 1);
    }

    fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until `done` holds of the requests served from `from` on
    /// (each looked at once); panics after [`SIGNAL_TIMEOUT`], telling
    /// whether the load had ended.
    async fn wait_for(&self, what: &str, from: usize, mut done: impl FnMut(&Served) -> bool) {
        let mut seen = from;
        let mut rx = self.served.subscribe();
        let found = rx.wait_for(|_| {
            let log = self.log.lock().unwrap();
            let hit = log[seen..].iter().any(&mut done);
            seen = log.len();
            hit
        });
        if tokio::time::timeout(SIGNAL_TIMEOUT, found).await.is_err() {
            let log = self.log.lock().unwrap();
            let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
            for served in &log[from..] {
                *statuses.entry(&served.status).or_default() += 1;
            }
            let bound = self.requests.load(Ordering::SeqCst) >= MAX_REQUESTS
                || self.started.elapsed() >= MAX_LOAD_TIME;
            panic!(
                "timed out waiting for {what}; the load had served {} requests{}; \
                 since the wait began: {statuses:#?}",
                log.len(),
                if bound { " and reached its bound" } else { "" }
            );
        }
    }

    /// Waits until `n` more requests on `items` have been served.
    async fn wait_served(&self, items: &[usize], n: usize) {
        let mut count = 0;
        self.wait_for(&format!("{n} requests on {items:?}"), self.len(), |s| {
            if items.contains(&s.item) {
                count += 1;
            }
            count >= n
        })
        .await;
    }
}

/// The version in an item's body.
fn version_in(reply: &Reply, item: usize) -> Result<u64, String> {
    let text = std::str::from_utf8(&reply.body).map_err(|e| e.to_string())?;
    text.strip_prefix(&format!("item={item} version="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("malformed body {text:?}"))
}

/// A `Cache-Status` with its numbers left out (`ttl=N`, `purged=N`).
fn shape(status: &str) -> String {
    status
        .split("; ")
        .map(|part| match part.split_once('=') {
            Some((name, value)) if value.trim_start_matches('-').parse::<u64>().is_ok() => {
                format!("{name}=N")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One client of the load: GETs and, one time in five, PUTs of random
/// items, until the load stops or reaches its bounds.
async fn worker<S, B>(svc: S, load: &Load, seed: u64)
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    let mut rng = fastrand::Rng::with_seed(seed);
    while load.running() {
        let item = rng.usize(..ITEMS);
        let path = path_of(item);
        let start = Instant::now();
        let put = rng.u8(..5) == 0;
        let floor = load.acked[item].load(Ordering::SeqCst);
        let reply = if put {
            send(&svc, request(Method::PUT, &path, &[])).await
        } else {
            send(&svc, get(&path)).await
        };
        let end = Instant::now();
        let status = reply.cache_status();
        let what = format!(
            "{} {path} at {:?}",
            if put { "PUT" } else { "GET" },
            start - load.started
        );
        if reply.status != StatusCode::OK {
            load.fail(format!("{what}: status {} ({status})", reply.status));
        }
        match version_in(&reply, item) {
            Err(error) => load.fail(format!("{what}: {error} ({status})")),
            Ok(version) if put => {
                let purge = status.strip_prefix("tower-cache-aside; fwd=method; purged=");
                let well_formed = purge.is_some_and(|rest| {
                    let (n, detail) = rest.split_once("; ").unwrap_or((rest, ""));
                    n.parse::<u64>().is_ok() && ["", "detail=purge-failed"].contains(&detail)
                });
                if !well_formed {
                    load.fail(format!("{what}: Cache-Status {status:?}"));
                }
                load.acked[item].fetch_max(version, Ordering::SeqCst);
            }
            Ok(version) if version < floor => load.fail(format!(
                "{what}: stale read: version {version} after a PUT acknowledged version {floor} ({status})"
            )),
            Ok(_) => {}
        }
        load.record(Served {
            item,
            start,
            end,
            put,
            hit: reply.is_hit(),
            status: shape(&status),
        });
        // A steady load, not a flood: about 2,000 requests a second in
        // all (a forwarded request may not wait on anything).
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

/// A topology change and what the load saw of it.
struct Change {
    name: String,
    /// The items whose slots it moved to another node.
    items: Vec<usize>,
    start: Instant,
    /// When the cluster had settled in its new shape.
    settled: Instant,
    /// The end of the first hit on one of `items` that started after
    /// `settled`.
    resumed: Instant,
    /// For a migration: from when to when its slots were open, and the
    /// items that had an entry at the start of it.
    open: Option<(Instant, Instant, Vec<usize>)>,
}

/// The GETs a migration's open slots must not have turned into misses:
/// on an item that had an entry when the slots opened, with no PUT on it
/// since, served while the slots were open. Returns how many there were,
/// and those that were not hits.
fn must_hit<'a>(
    log: &'a [Served],
    open: &(Instant, Instant, Vec<usize>),
) -> (usize, Vec<&'a Served>) {
    let (from, to, existing) = open;
    let written = |item: usize, until: Instant| {
        log.iter()
            .any(|s| s.put && s.item == item && s.end >= *from && s.start <= until)
    };
    let checked: Vec<&Served> = log
        .iter()
        .filter(|s| !s.put && s.start >= *from && s.end <= *to && existing.contains(&s.item))
        .filter(|s| !written(s.item, s.end))
        .collect();
    let missed = checked.iter().copied().filter(|s| !s.hit).collect();
    (checked.len(), missed)
}

impl Change {
    fn report(&self, log: &[Served]) {
        let during: Vec<&Served> = log
            .iter()
            .filter(|s| s.end >= self.start && s.start <= self.resumed)
            .collect();
        let affected = during.iter().filter(|s| self.items.contains(&s.item));
        let (mut requests, mut hits, mut puts) = (0, 0, 0);
        for served in affected {
            requests += 1;
            hits += usize::from(served.hit);
            puts += usize::from(served.put);
        }
        let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
        for served in &during {
            *statuses.entry(&served.status).or_default() += 1;
        }
        // The longest time without a hit on the moved items, and the
        // requests on them served meanwhile.
        let (mut gap, mut gap_requests) = (Duration::ZERO, 0);
        let (mut last_hit, mut since) = (self.start, 0);
        for served in during.iter().filter(|s| self.items.contains(&s.item)) {
            if served.hit {
                if served.end.saturating_duration_since(last_hit) > gap {
                    gap = served.end.saturating_duration_since(last_hit);
                    gap_requests = since;
                }
                (last_hit, since) = (served.end, 0);
            } else {
                since += 1;
            }
        }
        let mut report = format!(
            "{}: settled after {:?}; the first hit on its items after that {:?} later; \
             {} requests served from its start to that hit, {requests} of them on its {} \
             items ({hits} hits, {puts} PUTs); the longest time without a hit on them \
             {gap:?} ({gap_requests} requests on them meanwhile)",
            self.name,
            self.settled - self.start,
            self.resumed - self.settled,
            during.len(),
            self.items.len(),
        );
        for (status, n) in statuses {
            report.push_str(&format!("\n    {n:6}  {status}"));
        }
        // One write: the report stays whole beside another test's.
        eprintln!("{report}");
    }
}

/// Looks `item` up until it is a hit (storing it first if need be, and
/// waiting out a pending purge); returns the hit.
async fn hit_again<S, B>(svc: &S, store: &CountingStore, item: usize) -> Reply
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    let path = path_of(item);
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    loop {
        let puts = store.puts_finished_for(&path);
        let reply = send(svc, get(&path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        if reply.is_hit() {
            assert_hit(&reply);
            return reply;
        }
        let status = reply.cache_status();
        if status == STORED {
            store.wait_puts_for(&path, puts + 1).await;
        } else {
            // A purge still pending retry, say: poll.
            assert!(Instant::now() < deadline, "{path} is not cached: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Caches item 2 and writes it through `svc` until `listener` hears the
/// purge announced (a purge of something is announced; its subscriber may
/// be subscribing still, or again after a change), then caches it again;
/// panics after [`SIGNAL_TIMEOUT`].
async fn assert_hears_purges<S, B>(
    svc: &S,
    store: &CountingStore,
    listener: &RedisStore,
    when: &str,
) where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    let mut heard = listener.purges_heard();
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    loop {
        hit_again(svc, store, 2).await;
        let before = *heard.borrow_and_update();
        let written = send(svc, request(Method::PUT, &path_of(2), &[])).await;
        assert_eq!(written.status, StatusCode::OK, "{when}");
        let wait = heard.wait_for(|n| *n > before);
        if tokio::time::timeout(Duration::from_millis(500), wait)
            .await
            .is_ok()
        {
            // Cached again, as it was.
            hit_again(svc, store, 2).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: the second instance never heard a purge"
        );
    }
}

/// A planned failover of the primary of item 0's slot to its replica.
async fn fail_over(cluster: &Cluster, load: &Load, topology: &Topology) -> (Change, Topology) {
    let old = topology.owner(slot_of(0)).clone();
    let new = topology.replica_of(&old.id).clone();
    let items: Vec<usize> = (0..ITEMS)
        .filter(|&i| topology.owner(slot_of(i)).id == old.id)
        .collect();
    load.wait_served(&items, DWELL).await;
    let start = Instant::now();
    let reply: String = run(cluster.admin(new.port), "CLUSTER", args(&["FAILOVER"]))
        .await
        .expect("CLUSTER FAILOVER");
    assert_eq!(reply, "OK");
    let topology = cluster
        .wait_settled("the failover", |t| {
            t.owner(slot_of(0)).id == new.id && t.replica_of(&new.id).id == old.id
        })
        .await;
    let settled = Instant::now();
    let name = format!(
        "CLUSTER FAILOVER of {} to {} ({} items)",
        old.port,
        new.port,
        items.len()
    );
    (
        Change::resumed(load, name, items, start, settled).await,
        topology,
    )
}

impl Change {
    /// The change, once a hit on one of its items that started after it
    /// settled has been served.
    async fn resumed(
        load: &Load,
        name: String,
        items: Vec<usize>,
        start: Instant,
        settled: Instant,
    ) -> Change {
        let from = load.len();
        load.wait_for(&format!("a hit after the {name}"), from, |s| {
            s.hit && s.start >= settled && items.contains(&s.item)
        })
        .await;
        Change {
            name,
            items,
            start,
            settled,
            resumed: Instant::now(),
            open: None,
        }
    }
}

/// Every slot of the items on the primary of item 0's slot, migrated to
/// another primary while the load runs: the slots are opened
/// (`IMPORTING` on the target, `MIGRATING` on the source), requests run,
/// each slot's keys move in one `MIGRATE`, requests run again, and the
/// slots are given to the target on every primary.
async fn migrate(cluster: &Cluster, load: &Load, topology: &Topology) -> (Change, Topology) {
    let source = topology.owner(slot_of(0)).clone();
    let target = topology
        .primaries()
        .find(|p| p.id != source.id)
        .expect("a second primary")
        .clone();
    let items: Vec<usize> = (0..ITEMS)
        .filter(|&i| topology.owner(slot_of(i)).id == source.id)
        .collect();
    let mut slots: Vec<u16> = items.iter().map(|&i| slot_of(i)).collect();
    slots.sort_unstable();
    slots.dedup();
    let migration = SlotMigration {
        source: cluster.admin(source.port),
        target: cluster.admin(target.port),
        target_port: target.port,
        others: topology
            .primaries()
            .filter(|p| p.id != source.id && p.id != target.id)
            .map(|p| cluster.admin(p.port))
            .collect(),
    };
    load.wait_served(&items, DWELL).await;
    let start = Instant::now();
    for &slot in &slots {
        migration.open(slot).await;
    }
    let opened = Instant::now();
    let mut existing = Vec::new();
    for &item in &items {
        let key = format!("tca:{{{}}}", path_of(item));
        // An absent key of an open slot is answered ASK.
        let found: i64 = match support::admin(cluster.admin(source.port), &["EXISTS", &key]).await {
            Err(error) if error.details().starts_with("ASK ") => 0,
            found => found.expect("EXISTS"),
        };
        if found == 1 {
            existing.push(item);
        }
    }
    // Open, the keys still on the source: a purged item's keys are on
    // neither node (ASK, then TRYAGAIN on the target).
    load.wait_served(&items, 3 * DWELL).await;
    let mut moved = 0;
    for &slot in &slots {
        moved += migration.move_keys(slot).await;
    }
    // Open, the keys on the target: every request on them meets ASK, and
    // a hit is still a hit (ASKING, then the read, on the target).
    let migrated = Instant::now();
    load.wait_for(
        "a hit on a migrated item before its slot closed",
        load.len(),
        |s| s.hit && s.start >= migrated && items.contains(&s.item),
    )
    .await;
    load.wait_served(&items, 3 * DWELL).await;
    let closing = Instant::now();
    for &slot in &slots {
        migration.close(slot).await;
    }
    let topology = cluster
        .wait_settled("the migration", |t| {
            slots.iter().all(|&slot| t.owner(slot).id == target.id)
        })
        .await;
    let settled = Instant::now();
    let name = format!(
        "slot migration of {} slots ({moved} keys) from {} to {} ({} items)",
        slots.len(),
        source.port,
        target.port,
        items.len()
    );
    let mut change = Change::resumed(load, name, items, start, settled).await;
    change.open = Some((opened, closing, existing));
    (change, topology)
}

/// A change of the cluster's topology, made while the load runs.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    Failover,
    Migration,
}

/// Starts a cluster, caches every item, runs the load while `scenario`
/// changes the topology, then checks what the load saw and what is left
/// in the store.
async fn under_load(scenario: Scenario) {
    // The crate's logs (failed purges, say) with RUST_LOG=tower_cache_aside=debug.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start().await;
    let topology = cluster.wait_settled("the new cluster", |_| true).await;
    let store = CountingStore::new(Arc::new(
        RedisStore::connect(&cluster.url())
            .await
            .expect("connect to the cluster"),
    ));
    let load = Load::new();
    let origin = load.origin();
    let layer = CacheAsideLayer::builder(store.as_dyn())
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let svc = layer.layer(origin.service());

    // Every item cached before the load starts.
    for item in 0..ITEMS {
        hit_again(&svc, &store, item).await;
    }
    // A second instance, listening for the announcements (its first hit
    // starts its subscriber), hears this one's purges.
    let listener = RedisStore::connect(&cluster.url())
        .await
        .expect("connect the second instance");
    let listening = CacheAsideLayer::builder(listener.clone())
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(origin.service());
    assert_hit(&send(&listening, get(&path_of(1))).await);
    assert_hears_purges(&svc, &store, &listener, "before the change").await;

    let driver = async {
        let changed = match scenario {
            Scenario::Failover => fail_over(&cluster, &load, &topology).await,
            Scenario::Migration => migrate(&cluster, &load, &topology).await,
        };
        load.stop.store(true, Ordering::SeqCst);
        changed
    };
    let workers =
        futures_util::future::join_all((0..WORKERS).map(|w| worker(svc.clone(), &load, w as u64)));
    let ((change, topology), _) = tokio::join!(driver, workers);

    let log = std::mem::take(&mut *load.log.lock().unwrap());
    let elapsed = log.last().map(|s| s.end - load.started).unwrap_or_default();
    eprintln!(
        "{scenario:?}: {} requests in {elapsed:?} ({} hits, {} PUTs) by {WORKERS} clients",
        log.len(),
        log.iter().filter(|s| s.hit).count(),
        log.iter().filter(|s| s.put).count()
    );
    change.report(&log);
    let failed_purges = log
        .iter()
        .filter(|s| s.status.contains("purge-failed"))
        .count();
    eprintln!("{scenario:?}: {failed_purges} writes answered purge-failed");
    if let Some(open) = &change.open {
        // The store follows ASK and TRYAGAIN to wherever the keys are.
        assert_eq!(failed_purges, 0, "every purge completes during a migration");
        let (checked, missed) = must_hit(&log, open);
        eprintln!(
            "{scenario:?}: {checked} GETs while the slots were open on the {} items that had \
             an entry and no write since; {} of them not hits",
            open.2.len(),
            missed.len()
        );
        assert!(
            checked > 0,
            "some GETs found an entry while the slots were open"
        );
        let shown: Vec<String> = missed
            .iter()
            .take(10)
            .map(|s| {
                format!(
                    "item {} at {:?}: {}",
                    s.item,
                    s.start - load.started,
                    s.status
                )
            })
            .collect();
        assert!(
            missed.is_empty(),
            "entries not read while the slots were open: {shown:#?}"
        );
    }
    let failures = std::mem::take(&mut *load.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed or stale requests, the first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );

    // Caching resumed on every item, those the change moved included.
    for item in 0..ITEMS {
        hit_again(&svc, &store, item).await;
    }
    // Purges complete: a write purges the entry where it lives now.
    let item = change.items[0];
    let path = path_of(item);
    let written = send(&svc, request(Method::PUT, &path, &[])).await;
    assert_eq!(written.status, StatusCode::OK);
    assert!(
        written.cache_status().ends_with("purged=1"),
        "{path}: {}",
        written.cache_status()
    );
    let after = send(&svc, get(&path)).await;
    assert_eq!(after.cache_status(), STORED, "{path} after the write");
    assert_eq!(
        version_in(&after, item).unwrap(),
        version_in(&written, item).unwrap()
    );
    hit_again(&svc, &store, item).await;

    // The announcements channel works through the change.
    assert_hears_purges(&svc, &store, &listener, "after the change").await;

    // A glob purge reaches every primary.
    let spread = cluster.item_hashes(&topology).await;
    eprintln!(
        "{scenario:?}: item hashes per primary (port, count) before the glob purge: {spread:?}"
    );
    assert!(
        spread.iter().filter(|(_, n)| *n > 0).count() > 1,
        "the items' keys are on more than one primary: {spread:?}"
    );
    assert_eq!(
        spread.iter().map(|(_, n)| n).sum::<usize>(),
        ITEMS,
        "one hash per item: {spread:?}"
    );
    let removed = layer.purger().purge_glob("/items/*").await.unwrap();
    assert_eq!(removed, ITEMS as u64, "every entry, on every primary");
    for primary in topology.primaries() {
        let left = scan_keys(cluster.admin(primary.port), ITEM_KEYS).await;
        assert!(left.is_empty(), "left on {}: {left:?}", primary.port);
    }
}

#[tokio::test]
async fn a_planned_failover_under_load() {
    under_load(Scenario::Failover).await;
}

#[tokio::test]
async fn a_slot_migration_under_load() {
    under_load(Scenario::Migration).await;
}
