//! The Redis store, through fred. Every Redis command and Lua script of the
//! crate lives in this file.
//!
//! Key layout (see ARCHITECTURE.md), one hash tag per resource so that an
//! entry and its resource's index live in one Cluster slot and one script
//! can change them together:
//!
//! ```text
//! <prefix>{<resource>}:v:<variant>   the entry, PX = its ttl
//! <prefix>{<resource>}:idx           sorted set: entry keys scored by expiry (ms)
//! ```
//!
//! The index lets a purge of one resource cost O(its variants) instead of a
//! scan of the keyspace. Scoring members by expiry lets every write drop the
//! members that have expired, so the index of a busy resource does not grow
//! without bound.

use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scan::Scanner;
use fred::types::Builder;
use futures_util::StreamExt;

use super::{Store, StoreFuture};
use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::Error;

/// Reads an entry, but only while its resource's index still names it: the
/// index is the authority on what may be served. If an index is lost
/// (evicted under `maxmemory`, say) while entries survive, those entries
/// can no longer escape a purge, because they are no longer served.
/// KEYS: entry, index. Returns the value or nil.
const GET_SCRIPT: &str = r#"
local value = redis.call('GET', KEYS[1])
if not value then return false end
if not redis.call('ZSCORE', KEYS[2], KEYS[1]) then return false end
return value
"#;

/// Writes an entry and records it in its resource's index.
/// KEYS: entry, index. ARGV: value, ttl in ms.
const PUT_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"#;

/// Removes every entry a resource's index names, then the index.
/// KEYS: index. Returns how many entries existed.
const PURGE_SCRIPT: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local removed = 0
for i = 1, #members, 500 do
  removed = removed + redis.call('UNLINK', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('UNLINK', KEYS[1])
return removed
"#;

/// A Lua script sent by hash, and in full when the server does not know it
/// yet (after a restart or on a new Cluster node).
#[derive(Debug, Clone)]
struct Script {
    source: &'static str,
    sha1: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha1: fred::util::sha1_hash(source),
        }
    }

    async fn run<R: fred::types::FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<fred::types::Value>,
    ) -> Result<R, Error> {
        match client
            .evalsha::<R, _, _, _>(self.sha1.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                Ok(client.eval(self.source, keys, args).await?)
            }
            result => Ok(result?),
        }
    }
}

#[derive(Clone)]
enum Connection {
    Client(Client),
    Pool(Pool),
}

/// A [`Store`] in Redis (or Valkey), standalone or Cluster, through a fred
/// [`Client`] or [`Pool`].
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
    connection: Connection,
    get: Script,
    put: Script,
    purge: Script,
}

/// Keys asked for per `SCAN` call in a pattern purge; each page's indexes
/// are purged before the next page is read, so memory stays bounded.
const SCAN_COUNT: u32 = 1000;

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

impl From<Client> for RedisStore {
    fn from(client: Client) -> Self {
        RedisStore::with(Connection::Client(client))
    }
}

impl From<Pool> for RedisStore {
    fn from(pool: Pool) -> Self {
        RedisStore::with(Connection::Pool(pool))
    }
}

impl RedisStore {
    fn with(connection: Connection) -> RedisStore {
        RedisStore {
            connection,
            get: Script::new(GET_SCRIPT),
            put: Script::new(PUT_SCRIPT),
            purge: Script::new(PURGE_SCRIPT),
        }
    }

    /// Connects a new client to `url` (`redis://`, `rediss://` with a TLS
    /// feature of fred, `redis-cluster://`, …) with the crate's defaults:
    /// reconnect forever with exponential back-off (100 ms to 5 s) and a
    /// 1 s command timeout. Fails when the first connection fails.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(1);
            })
            .build()?;
        client.init().await?;
        Ok(RedisStore::from(client))
    }

    fn client(&self) -> &Client {
        match &self.connection {
            Connection::Client(client) => client,
            Connection::Pool(pool) => pool.next(),
        }
    }

    fn entry_key(key: &EntryKey) -> String {
        let resource = key.resource();
        format!(
            "{}{{{}}}:v:{}",
            resource.prefix(),
            resource.resource(),
            key.variant()
        )
    }

    fn index_key(resource: &ResourceKey) -> String {
        format!("{}{{{}}}:idx", resource.prefix(), resource.resource())
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            self.get
                .run(
                    self.client(),
                    vec![Self::entry_key(key), Self::index_key(key.resource())],
                    vec![],
                )
                .await
        })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            self.put
                .run::<()>(
                    self.client(),
                    vec![Self::entry_key(key), Self::index_key(key.resource())],
                    vec![value.into(), ttl_ms.into()],
                )
                .await
        })
    }

    fn remove<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.client().unlink::<i64, _>(Self::entry_key(key)).await?;
            Ok(())
        })
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let removed: i64 = self
                .purge
                .run(self.client(), vec![Self::index_key(resource)], vec![])
                .await?;
            Ok(u64::try_from(removed).unwrap_or(0))
        })
    }

    /// `SCAN MATCH <prefix>{<literal prefix>*}:idx` on every primary (never
    /// `KEYS`), then the purge script on each index the pattern matches,
    /// page by page.
    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let client = self.client();
            // Candidates: every index under the pattern's literal start;
            // `matches` then decides (it also reaches long, hashed paths).
            let glob = format!("{}{{{}*}}:idx", pattern.prefix(), pattern.literal_prefix());
            let resource_of = |index: &str| -> Option<String> {
                let inner = index.strip_prefix(pattern.prefix())?.strip_prefix('{')?;
                Some(inner.strip_suffix("}:idx")?.to_owned())
            };
            let mut pages = if client.is_clustered() {
                client.scan_cluster(glob, Some(SCAN_COUNT), None).boxed()
            } else {
                client.scan(glob, Some(SCAN_COUNT), None).boxed()
            };
            let mut removed = 0u64;
            while let Some(page) = pages.next().await {
                let mut page = page?;
                let indexes = page.take_results().unwrap_or_default();
                let purges = indexes.into_iter().filter_map(|index| {
                    let index = index.into_string()?;
                    if !pattern.matches(&resource_of(&index)?) {
                        return None;
                    }
                    Some(async move { self.purge.run::<i64>(client, vec![index], vec![]).await })
                });
                for result in futures_util::future::join_all(purges).await {
                    removed += u64::try_from(result?).unwrap_or(0);
                }
                page.next();
            }
            Ok(removed)
        })
    }
}
