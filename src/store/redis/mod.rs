//! The Redis store, through fred. Every Redis command and Lua script of the
//! crate lives in this module.
//!
//! Key layout (see ARCHITECTURE.md): one hash per resource, and beside it,
//! under the same hash tag (so in one Cluster slot), the expiry of each of
//! its fields:
//!
//! ```text
//! <prefix>{<resource>}     hash: v:<variant> = an entry, l:<variant> = its fill lease (the token),
//!                          m:<variant> = the vary record of a base variant (see crate::key::vary)
//! <prefix>{<resource>}:t   sorted set: each field of the hash, scored by its expiry (ms, Redis's clock)
//! ```
//!
//! The hash is its own index: a purge of a resource is one `UNLINK` of the
//! two keys, which drops every variant and every lease at once, and
//! `maxmemory` eviction can only take a resource whole. So nothing that a
//! purge cannot find is ever there to be served, and a hit on an entry
//! seen fresh lately is one plain `HGET` (see
//! [`Hints`](super::hints::Hints)); other reads go through the lookup
//! script, which also checks expiry and takes the fill lease on a miss.
//!
//! # Files
//!
//! - this file: [`RedisStore`], its constructors, and its [`Store`]
//!   methods, which put the pieces below together;
//! - `read.rs`: the read path (the hinted `HGET`, the lookup script) and
//!   the wait on a lease held elsewhere;
//! - `purge.rs`: the purge of a resource, and of a pattern by `SCAN`;
//! - `scripts.rs`: the Lua scripts, assembled from shared pieces, and how
//!   they are sent;
//! - `events.rs`: the hints and fill waiters, fed by the announcements on
//!   the events channel;
//! - `call.rs`: one call's client and deadline, and how it follows a
//!   Cluster's redirections;
//! - `asking.rs`: the slots found migrating, and the store's clients of
//!   the nodes importing them;
//! - `names.rs`: the Redis names of a resource and its entries (the key
//!   layout above).
//!
//! Imports go one way, down this order: `mod.rs` -> `read.rs`, `purge.rs`
//! -> `scripts.rs`, `events.rs` -> `call.rs`, `names.rs` -> `asking.rs`.
//! A file uses only files below its own rank (`mod.rs` any of them), and no file below
//! `mod.rs` knows [`RedisStore`]: what one needs of the store (a client,
//! a script, the hints) is passed to it as an argument.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, EventInterface, HashesInterface, SortedSetsInterface};
use fred::types::Value;

use self::asking::Migrations;
use self::call::Call;
use self::events::{Events, EVENTS_CHANNEL};
use self::names::{bound_arg, lease_arg, token_arg, KeyNames};
use self::read::EntryRead;
use self::scripts::Scripts;
use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::store::backend::{
    across_resources, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture, VariedFill, VaryRecord,
};
use crate::Error;

mod asking;
mod call;
mod connect;
mod events;
mod names;
mod purge;
mod read;
mod scripts;
mod tls;

pub use self::connect::RedisStoreBuilder;
pub use self::tls::TlsBackend;

impl RedisStoreBuilder {
    /// Connects (see [`RedisStore::connect`]): fails when the first
    /// connection fails (each step of it, connecting, TLS, `AUTH` and a
    /// sentinel's answer, within 2 s; the `PING` within 1 s), and after
    /// 10 s in all whatever the client is still trying.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        let client = self.client(true)?;
        // Each step has its own timeout; the whole is bounded too, so that
        // no retry loop of the client's (a sentinel naming a primary that
        // is not one yet, say) can hold `connect` forever.
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_with(&client)).await {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(error)) => {
                let _ = client.quit().await;
                Err(error)
            }
            Err(_) => {
                let _ = client.quit().await;
                Err(Error::Timeout(CONNECT_TIMEOUT))
            }
        }
    }

    /// The steps of [`connect`](Self::connect) on `client`.
    async fn connect_with(&self, client: &Client) -> Result<RedisStore, Error> {
        let first = |error| self.first_contact_error(error);
        client.init().await.map_err(first)?;
        // A server that refuses the client's certificate says so only once
        // the handshake is over (TLS 1.3): ask it something before saying
        // the connection works.
        client.ping::<Value>(None).await.map_err(first)?;
        let replicated = match self.replicated_purges {
            Some((replicas, timeout)) => {
                let purges = client.clone_new();
                if let Err(error) = purges.init().await {
                    let _ = purges.quit().await;
                    return Err(error.into());
                }
                Some(Arc::new(ReplicatedPurges {
                    client: purges,
                    replicas,
                    timeout,
                }))
            }
            None => None,
        };
        let store = RedisStore {
            replicated,
            ..RedisStore::from(client.clone())
        };
        store.scripts.load(store.client()).await;
        Ok(store)
    }

    /// Makes the store without waiting for Redis (see
    /// [`RedisStore::connect_lazy`]).
    pub fn connect_lazy(self) -> Result<RedisStore, Error> {
        let client = self.client(false)?;
        log_connection_errors(&client);
        // The handle of the connection task is not needed: it runs until
        // the client quits.
        let _connection = client.connect();
        let replicated = self.replicated_purges.map(|(replicas, timeout)| {
            let purges = client.clone_new();
            let _connection = purges.connect();
            Arc::new(ReplicatedPurges {
                client: purges,
                replicas,
                timeout,
            })
        });
        Ok(RedisStore {
            replicated,
            ..RedisStore::from(client)
        })
    }
}

/// The most [`RedisStoreBuilder::connect`] may take, all steps together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs each failed connection attempt of `client` (one per back-off step,
/// so at most one every 5 s once Redis has been away a while).
fn log_connection_errors(client: &Client) {
    let _listener = client.on_error(|(error, server)| async move {
        let server = server.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(target: "tower_cache_aside", %error, %server, "cannot reach Redis; serving from the origin until it answers");
        Ok(())
    });
}

/// Purges that count only once replicas hold them: their own connection
/// (where `WAIT` blocks nothing else), and how many replicas, how long.
#[derive(Debug)]
struct ReplicatedPurges {
    client: Client,
    replicas: u32,
    timeout: Duration,
}

/// How a store reaches Redis: one client, or a pool of them.
#[derive(Clone)]
enum Connection {
    /// One client (one connection, multiplexed).
    Client(Client),
    /// A pool of clients, taken in turn.
    Pool(Pool),
}

/// A [`Store`] in Redis (or Valkey), standalone or Cluster, through a fred
/// [`Client`] or [`Pool`].
///
/// A hit on an entry this store has read or written fresh lately is one
/// plain `HGET` (see [`with_hints`](Self::with_hints)); other reads, and
/// every miss, are one Lua script that also takes the fill lease. The
/// store listens on the `tower-cache-aside:events` channel, on a
/// connection of its own, for fills and purges announced by every
/// instance.
///
/// Requires Redis 5 or later (scripts read `TIME` before writing).
///
/// ```no_run
/// # async fn run() -> Result<(), tower_cache_aside::Error> {
/// use tower_cache_aside::{CacheAsideLayer, RedisStore};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = CacheAsideLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    /// How the store reaches Redis.
    connection: Connection,
    /// Set on the views [`Store::bounded`] makes: every call's deadline.
    bound: Option<Duration>,
    /// The largest value a read accepts (see
    /// [`with_max_value_bytes`](Self::with_max_value_bytes)).
    max_value_bytes: u64,
    /// The Lua scripts, made for `max_value_bytes`.
    scripts: Arc<Scripts>,
    /// Hints and fill waiters, shared by the store's views and kept up to
    /// date by the events channel.
    events: Arc<Events>,
    /// Set by [`RedisStoreBuilder::replicated_purges`].
    replicated: Option<Arc<ReplicatedPurges>>,
    /// The Cluster slots found migrating, and clients of the nodes
    /// importing them (see `asking.rs`).
    migrations: Arc<Migrations>,
}

/// Largest value read back by default: well above the layer's default body
/// cap (1 MiB) plus headers.
const DEFAULT_MAX_VALUE_BYTES: u64 = 32 * 1024 * 1024;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.connection {
            Connection::Client(_) => "client",
            Connection::Pool(_) => "pool",
        };
        f.debug_struct("RedisStore")
            .field("connection", &kind)
            .finish()
    }
}

/// A store on a fred client of your own. On a Cluster, build it with
/// `max_redirections` 0 (fred's `ConnectionConfig`), as
/// [`RedisStore::connect`] does: the store then follows `MOVED` and `ASK`
/// itself, and fred's own following of `ASK` (10.1) can hand replies to
/// the wrong commands while a slot migrates. A clustered client without
/// it is logged (`warn`).
impl From<Client> for RedisStore {
    fn from(client: Client) -> Self {
        warn_on_redirections(&client);
        RedisStore::with(Connection::Client(client))
    }
}

/// A store on a fred pool of your own; on a Cluster, as for a
/// [`Client`], its clients want `max_redirections` 0.
impl From<Pool> for RedisStore {
    fn from(pool: Pool) -> Self {
        warn_on_redirections(pool.next());
        RedisStore::with(Connection::Pool(pool))
    }
}

/// Logs a clustered `client` that follows redirections itself.
fn warn_on_redirections(client: &Client) {
    if client.is_clustered() && client.connection_config().max_redirections > 0 {
        tracing::warn!(
            target: "tower_cache_aside",
            max_redirections = client.connection_config().max_redirections,
            "a clustered fred client given to RedisStore follows redirections itself: \
             set max_redirections to 0 so that slot migrations are followed by the store"
        );
    }
}

impl RedisStore {
    /// A store on `connection`, with the default bound and hints.
    fn with(connection: Connection) -> RedisStore {
        RedisStore {
            connection,
            bound: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            scripts: Arc::new(Scripts::new(DEFAULT_MAX_VALUE_BYTES)),
            events: Arc::default(),
            replicated: None,
            migrations: Arc::default(),
        }
    }

    /// Connects a new client to `url` (`redis://`, `rediss://` with a TLS
    /// feature, `redis-cluster://`, `redis-sentinel://`, …) with the
    /// crate's defaults: reconnect forever with exponential back-off (100
    /// ms to 5 s), a 2 s connection timeout and a 1 s command timeout; a
    /// `rediss://` connection trusts the system's roots and the file
    /// `SSL_CERT_FILE` names. Loads the store's Lua scripts (on every
    /// primary of a cluster), so that no first call pays a second round
    /// trip to send one in full. Fails when the first connection fails (a
    /// refused connection, a wrong password, a certificate either side
    /// does not accept). [`builder`](Self::builder) sets what a URL
    /// cannot say.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        RedisStore::builder(url).connect().await
    }

    /// A builder for a store on `url`, for the settings a URL cannot carry:
    /// TLS roots and client certificates, purges acknowledged by replicas.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// The largest value a read accepts (default 32 MiB). The lookup
    /// script deletes a larger value at an entry's field unread, and it is
    /// a miss; one read by a plain `HGET` (an entry hinted fresh that
    /// someone replaced since) is dropped once read, and looked up again
    /// through the script. Raise it if you raise the layer's
    /// `max_body_bytes` near it.
    pub fn with_max_value_bytes(mut self, bytes: u64) -> RedisStore {
        self.max_value_bytes = bytes.min(i64::MAX as u64);
        self.scripts = Arc::new(Scripts::new(self.max_value_bytes));
        self
    }

    /// How many entries this store remembers as seen fresh (default
    /// 16,384, in 256 KiB), so that a hit on one of them is a plain `HGET`
    /// rather than the lookup script. Size it to the entries that are hot
    /// at once; past that, hits on the rest go through the script (still
    /// one round trip, but more work for Redis). 0 sends every read
    /// through the script.
    pub fn with_hints(mut self, entries: usize) -> RedisStore {
        self.events = Arc::new(Events::with_hints(entries));
        self
    }

    /// Like [`connect`](Self::connect), but does not wait for Redis: the
    /// client connects in the background and keeps trying (back-off up to
    /// 5 s), so an app starts while Redis is down and starts caching when it
    /// answers. Until then the layer serves from the origin, and each
    /// failed connection attempt is logged (a `warn` event naming the
    /// error: refused, `WRONGPASS`, a certificate not trusted). Fails only
    /// on a bad URL or bad settings. Call it within a Tokio runtime.
    pub fn connect_lazy(url: &str) -> Result<RedisStore, Error> {
        RedisStore::builder(url).connect_lazy()
    }

    /// Purge announcements this store has heard from the events channel
    /// (its own included), for tests that must know a purge was heard
    /// before they look again. Not part of the API.
    #[cfg(feature = "_internal")]
    #[doc(hidden)]
    pub fn purges_heard(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.purges_heard.subscribe()
    }

    /// Starts listening to the events channel, and resolves once it
    /// listens (or after `timeout`). Not part of the API: the store starts
    /// listening by itself on its first hinted read or fill wait.
    #[cfg(feature = "_internal")]
    #[doc(hidden)]
    pub async fn listen(&self, timeout: Duration) {
        self.events.listen(self.client(), timeout).await;
    }

    /// The client for a call: the store's own, or the pool's next.
    fn client(&self) -> &Client {
        match &self.connection {
            Connection::Client(client) => client,
            Connection::Pool(pool) => pool.next(),
        }
    }

    /// A new call: a client, and the call's deadline on a bounded view.
    fn call(&self) -> Call<'_> {
        Call::new(self.client(), self.bound, &self.migrations)
    }

    /// A new call for a purge: on the purges' own connection when they are
    /// replicated (see [`RedisStoreBuilder::replicated_purges`]).
    fn purge_call(&self) -> Call<'_> {
        match &self.replicated {
            Some(replicated) => Call::new(&replicated.client, self.bound, &self.migrations),
            None => self.call(),
        }
    }

    /// When purges are replicated, the connection a purge on `call` is
    /// about to go over.
    async fn purge_connection(&self, call: &Call<'_>) -> Result<Option<String>, Error> {
        match &self.replicated {
            Some(_) => purge::connection(call).await.map(Some),
            None => Ok(None),
        }
    }

    /// Waits for the replicas a purge made on `call`, over the connection
    /// `before`, must reach, if any.
    async fn replicated(&self, call: &Call<'_>, before: Option<String>) -> Result<(), Error> {
        match (&self.replicated, before) {
            (Some(r), Some(before)) => {
                purge::replicated(call, r.replicas, r.timeout, &before).await
            }
            _ => Ok(()),
        }
    }

    /// Writes an entry for `ttl` (a fill when `token` is given: only while
    /// that token holds the lease of the entry, or of `varied`'s leased
    /// variant, which also says what becomes of the vary record), and
    /// hints it fresh once written. Whether it was written.
    async fn store(
        &self,
        key: &EntryKey,
        value: Bytes,
        ttl: Duration,
        token: Option<&LeaseToken>,
        varied: Option<(&EntryKey, &VaryRecord<'_>, Option<usize>)>,
    ) -> Result<bool, Error> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let names = KeyNames::entry(b"v:", key);
        let hint = names.hint();
        let stamp = self.events.hints.stamp(&hint);
        let empty = || Value::Bytes(Bytes::new());
        let variant = |key: &EntryKey| Value::Bytes(Bytes::copy_from_slice(key.variant_bytes()));
        let bound = match varied {
            Some((_, _, Some(max))) => bound_arg(max),
            _ => empty(),
        };
        let (leased, base, record) = match varied {
            None => (empty(), empty(), empty()),
            Some((lease, VaryRecord::Set { at, value }, _)) => {
                // The base's entry goes: forget its hint here.
                self.events.hints.clear(&KeyNames::entry(b"v:", at).hint());
                (variant(lease), variant(at), Value::Bytes(value.clone()))
            }
            Some((lease, _, _)) => (variant(lease), empty(), empty()),
        };
        let call = self.call();
        let stored: i64 = self
            .scripts
            .store
            .run_on(&call, &names, || {
                vec![
                    names.variant(),
                    Value::Bytes(value.clone()),
                    ttl_ms.into(),
                    token.map_or(Value::Bytes(Bytes::new()), token_arg),
                    Value::from_static_str(EVENTS_CHANNEL),
                    leased.clone(),
                    base.clone(),
                    record.clone(),
                    bound.clone(),
                ]
            })
            .await?;
        if stored == 1 {
            self.events.hints.set(&hint, stamp, ttl);
            self.events.hinted(call.client);
        }
        Ok(stored == 1)
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let call = self.call();
            let lookup = &self.scripts.lookup;
            match read::read(&call, &self.events, lookup, self.max_value_bytes, key, None).await? {
                EntryRead::Value(value) => Ok(Some(value)),
                _ => Ok(None),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.store(key, value, ttl, None, None).await?;
            Ok(())
        })
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let call = self.call();
            let (events, lookup) = (&self.events, &self.scripts.lookup);
            let bound = self.max_value_bytes;
            let mut found = read::read(&call, events, lookup, bound, key, Some(lease)).await?;
            if let EntryRead::Gone = found {
                // Purged between the check and the read: look again, which
                // now takes the lease (boxed: a rare path, see `Script::run`).
                found =
                    Box::pin(read::read(&call, events, lookup, bound, key, Some(lease))).await?;
            }
            match found {
                EntryRead::Value(value) => Ok(Lookup::Hit(value)),
                // Gone twice in a row: call the origin, and store nothing.
                EntryRead::Gone => Ok(Lookup::Unleased),
                EntryRead::Verdict(2) => Ok(Lookup::Lease),
                EntryRead::Verdict(4) => Ok(Lookup::Unleased),
                EntryRead::Verdict(5) => Ok(Lookup::Full),
                EntryRead::Verdict(3) => Box::pin(read::busy(&call, events, key, lease)).await,
                EntryRead::Verdict(_) => Err(Error::Store("unexpected lookup script reply".into())),
            }
        })
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let names = KeyNames::entry(b"v:", key);
            let call = self.call();
            let taken: i64 = self
                .scripts
                .lease
                .run_on(&call, &names, || vec![names.variant(), lease_arg(lease)])
                .await?;
            Ok(taken == 2)
        })
    }

    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.store(key, value, ttl, Some(token), None))
    }

    fn fill_varied<'a>(&'a self, fill: VariedFill<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if !fill.is_one_resource() {
                return Err(across_resources());
            }
            let VariedFill {
                lease,
                token,
                entry,
                value,
                ttl,
                record,
                max_entries,
            } = fill;
            let varied = Some((lease, &record, max_entries));
            self.store(entry, value, ttl, Some(token), varied).await
        })
    }

    /// A view of this store (same client, same hints) whose every call
    /// ends by `timeout`: a hinted read's `HGET` is watched by the store's
    /// watchdog thread, and every other Redis command gets the time its
    /// call has left as its fred timeout.
    fn bounded(&self, timeout: Duration) -> Option<Arc<dyn Store>> {
        Some(Arc::new(RedisStore {
            bound: Some(timeout),
            ..self.clone()
        }))
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let names = KeyNames::entry(b"v:", key);
            let call = self.call();
            self.scripts
                .release
                .run_on::<i64>(&call, &names, || {
                    vec![
                        names.variant(),
                        token_arg(token),
                        Value::from_static_str(EVENTS_CHANNEL),
                    ]
                })
                .await?;
            Ok(())
        })
    }

    /// One script per Cluster slot (one in all on a standalone server),
    /// sent concurrently; each entry is read as the lookup script reads it.
    fn get_many<'a>(&'a self, keys: &'a [EntryKey]) -> StoreFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let call = self.call();
            let client = call.client;
            let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let slot = if client.is_clustered() {
                    fred::util::redis_keyslot(KeyNames::resource(key.resource()).hash_name())
                } else {
                    0
                };
                match groups.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((slot, vec![i])),
                }
            }
            let call = &call;
            let reads = groups.iter().map(|(_, members)| async move {
                let values: Vec<Value> = self
                    .scripts
                    .get_many
                    .run(call, || {
                        let mut names = Vec::with_capacity(2 * members.len());
                        let mut variants = Vec::with_capacity(members.len());
                        for &i in members {
                            let entry = KeyNames::entry(b"v:", &keys[i]);
                            names.extend(entry.keys());
                            variants.push(entry.variant());
                        }
                        (names, variants)
                    })
                    .await?;
                if values.len() != members.len() {
                    return Err(Error::Store(
                        "get-many script: one value per key expected".into(),
                    ));
                }
                Ok::<_, Error>(values)
            });
            let mut out = vec![None; keys.len()];
            for ((_, members), values) in groups
                .iter()
                .zip(futures_util::future::join_all(reads).await)
            {
                for (&i, value) in members.iter().zip(values?) {
                    out[i] = match value {
                        Value::Bytes(value) => Some(value),
                        Value::String(value) => Some(value.into_inner()),
                        _ => None,
                    };
                }
            }
            Ok(out)
        })
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let names = KeyNames::entry(b"v:", key);
            self.events.hints.clear(&names.hint());
            let [hash, times] = names.keys();
            // The entry and the variant's vary record, if any (one of the
            // two was read and judged unusable).
            let record = KeyNames::entry(b"m:", key).field();
            let fields = vec![names.field(), record];
            // Two commands on one slot, sent together; the fields go
            // first, and an expiry left alone reads as nothing.
            let call = self.call();
            let client = call.client()?;
            let (removed, _) = futures_util::future::join(
                client.hdel::<i64, _, _>(hash, fields.clone()),
                client.zrem::<i64, _, _>(times, fields),
            )
            .await;
            call.result(removed).map(|_| ())
        })
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let call = self.purge_call();
            let names = KeyNames::resource(resource);
            let (script, hints) = (&self.scripts.purge, &self.events.hints);
            let before = self.purge_connection(&call).await?;
            let removed = purge::purge_hash(&call, script, hints, names, true).await?;
            self.replicated(&call, before).await?;
            Ok(removed)
        })
    }

    /// Scans, then purges each match (`purge_matching` in `purge.rs`).
    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        // The call starts when the purge is first polled.
        let purge = async move {
            let call = self.purge_call();
            let (script, hints) = (&self.scripts.purge, &self.events.hints);
            let before = self.purge_connection(&call).await?;
            let removed = purge::purge_matching(&call, script, hints, pattern).await?;
            self.replicated(&call, before).await?;
            Ok(removed)
        };
        match self.bound {
            // `SCAN` pages take no per-command options: on a bounded view
            // the whole purge runs under one timer (rare, unlike lookups).
            Some(bound) => Box::pin(async move {
                tokio::time::timeout(bound, purge)
                    .await
                    .unwrap_or(Err(Error::Timeout(bound)))
            }),
            None => Box::pin(purge),
        }
    }
}
