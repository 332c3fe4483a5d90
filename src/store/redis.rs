//! The Redis store, through fred. Every Redis command and Lua script of the
//! crate lives in this file.
//!
//! Key layout (see ARCHITECTURE.md), one hash tag per resource so that an
//! entry and its resource's index live in one Cluster slot and one script
//! can change them together:
//!
//! ```text
//! <prefix>{<resource>}:v:<variant>      the entry, PX = its ttl
//! <prefix>{<resource>}:lease:<variant>  its fill lease, value = a random token
//! <prefix>{<resource>}:idx              sorted set: entry and lease keys scored by expiry (ms)
//! ```
//!
//! The index lets a purge of one resource cost O(its variants) instead of a
//! scan of the keyspace. Scoring members by expiry lets every write drop the
//! members that have expired, so the index of a busy resource does not grow
//! without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::{Client, Pool, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, LuaInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scan::Scanner;
use fred::types::Builder;
use fred::types::{Key, Value};
use futures_util::StreamExt;

use super::waiters::Waiters;
use super::{FillEnd, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture};
use crate::decimal::Decimal;
use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::Error;

/// Looks an entry up, and on a miss takes its fill lease (`SET NX PX`), in
/// one round trip.
///
/// An entry may be read only while its resource's index still names it:
/// the index is the authority on what may be served. If an index is lost
/// (evicted under `maxmemory`, say) while entries survive, those entries
/// can no longer escape a purge, because they are no longer served. A
/// value of another type at the entry's key (not ours), or one over the
/// size bound, is deleted and read as absent.
///
/// A small value (at most `INLINE_BYTES`) is returned by the script
/// itself. A larger one is not: Lua copies every string it touches, which
/// made a 16 KiB hit cost Redis four times a `GET`. The script then only
/// says the entry is readable, and the value is read by a plain `GET`
/// sent right behind it on the same connection (see [`Hints`]).
///
/// The lease is indexed like an entry, so a purge of the resource drops it
/// too.
///
/// KEYS: entry, index, lease. ARGV: the lease, as the token (32 bytes)
/// followed by its ttl in ms ('' = no lease, only look). `MAX_VALUE_BYTES`
/// and `INLINE_BYTES` are replaced when the script is made.
/// Returns the value (a bulk string), or 1 (readable, not inline), 0 (not
/// readable, no lease asked), 2 (lease taken), 3 (lease held elsewhere) or
/// 4 (the server refuses writes, e.g. a full `maxmemory`: no lease).
const LOOKUP_SCRIPT: &str = r#"
local entry, index = KEYS[1], KEYS[2]
READABLE
if size then
  if size <= INLINE_BYTES then
    return redis.call('GET', KEYS[1])
  end
  return 1
end
if ARGV[1] == '' then
  return 0
end
local token = string.sub(ARGV[1], 1, 32)
local ttl = tonumber(string.sub(ARGV[1], 33))
local taken = redis.pcall('SET', KEYS[3], token, 'NX', 'PX', ttl)
if type(taken) == 'table' and taken.err then
  return 4
end
if taken then
  local member = KEYS[3]
  INDEX
  return 2
end
return 3
"#;

/// Whether `entry` may be read, for the scripts that read (written into
/// them where a line says `READABLE`, after they set `entry` and `index`):
/// leaves `size` the value's length while the index names the entry, nil
/// otherwise; deletes a value of another type (`STRLEN` fails) or over the
/// size bound, unread.
const READABLE: &str = r#"local size = redis.pcall('STRLEN', entry)
if type(size) ~= 'number' or size > MAX_VALUE_BYTES then
  redis.call('DEL', entry)
  size = nil
elseif not ((size > 0 or redis.call('EXISTS', entry) == 1)
    and redis.call('ZSCORE', index, entry)) then
  size = nil
end"#;

/// Records `member` (an entry or a lease) in `index`, scored by its expiry
/// `ttl` ms from now, and makes the index live at least as long; written
/// into the scripts where a line says `INDEX`, after they set those three.
/// Leaves `now` (ms, the server's clock).
const INDEX: &str = r#"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', index, now + ttl, member)
if redis.call('PTTL', index) < ttl then
  redis.call('PEXPIRE', index, ttl)
end"#;

/// Reads several entries of one Cluster slot, each under the same rules as
/// `LOOKUP_SCRIPT` (read only while its index names it; foreign or
/// oversized values deleted unread), without leases. KEYS: entry, index,
/// entry, index, … Returns one value or nil per entry. Values pass through
/// Lua: the typed cache's values are small, and one round trip per slot
/// matters more here.
const GET_MANY_SCRIPT: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local value = false
  local entry, index = KEYS[i], KEYS[i + 1]
  READABLE
  if size then
    value = redis.call('GET', KEYS[i])
  end
  out[#out + 1] = value
end
return out
"#;

/// Values up to this size come back inline from the lookup script. Above
/// it, Lua's copies cost Redis more than a second command costs the app
/// (measured with redis-benchmark, 16 commands pipelined: the script's
/// value costs about 1.2 µs per KiB, a `GET`'s 0.3).
const INLINE_BYTES: u64 = 2048;

/// Which entries were last seen large, so that their lookups send the `GET`
/// along with the script (one round trip) instead of after it (two).
///
/// A direct-mapped table of entry hashes: no allocation, no lock. A
/// collision only costs a lookup the other way round; a wrong hint is never
/// wrong data, as either way the script decides what is readable.
#[derive(Debug)]
struct Hints {
    slots: Box<[AtomicU64]>,
}

/// Slots in [`Hints`]: 32 KiB of hints.
const HINT_SLOTS: usize = 4096;

impl Default for Hints {
    fn default() -> Self {
        Hints {
            slots: (0..HINT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Hints {
    fn hash(key: &EntryKey) -> u64 {
        use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
        // The resource too: every key of the typed cache has one variant.
        let resource = xxh3_64(key.resource().resource().as_bytes());
        // 0 marks an empty slot.
        xxh3_64_with_seed(key.variant().as_bytes(), resource).max(1)
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        &self.slots[(hash as usize) % self.slots.len()]
    }

    fn is_large(&self, hash: u64) -> bool {
        self.slot(hash).load(Ordering::Relaxed) == hash
    }

    fn set_large(&self, hash: u64, large: bool) {
        let slot = self.slot(hash);
        if large {
            slot.store(hash, Ordering::Relaxed);
        } else {
            let _ = slot.compare_exchange(hash, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// Takes an entry's fill lease whether or not the entry exists (to refresh
/// a stale one), and indexes it. KEYS: index, lease. ARGV: token, lease ttl
/// in ms. Returns 1 when taken.
const LEASE_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[2])
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ttl) then
  return 0
end
local index, member = KEYS[1], KEYS[2]
INDEX
return 1
"#;

/// Writes an entry and records it in its resource's index. With a token,
/// only while that token holds the entry's lease (else nothing is written
/// and 0 returned); the lease is then dropped and the fill announced.
/// KEYS: entry, index, lease. ARGV: value, ttl in ms, token ('' = unfenced),
/// channel.
const STORE_SCRIPT: &str = r#"
if ARGV[3] ~= '' then
  if redis.call('GET', KEYS[3]) ~= ARGV[3] then
    redis.call('PUBLISH', ARGV[4], 'f:' .. KEYS[3])
    return 0
  end
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[2], KEYS[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local index, member, ttl = KEYS[2], KEYS[1], tonumber(ARGV[2])
INDEX
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[4], 'f:' .. KEYS[3])
end
return 1
"#;

/// Drops a lease if the token still holds it, and announces it.
/// KEYS: lease, index. ARGV: token, channel.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'r:' .. KEYS[1])
  return 1
end
return 0
"#;

/// Removes every entry and lease a resource's index names, then the index.
/// KEYS: index. Returns how many entries (not leases) existed.
const PURGE_SCRIPT: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local removed = 0
for i = 1, #members, 500 do
  local last = math.min(i + 499, #members)
  local entries = {}
  for j = i, last do
    if string.sub(members[j], -35, -33) == ':v:' then
      entries[#entries + 1] = members[j]
    else
      redis.call('UNLINK', members[j])
    end
  end
  if #entries > 0 then
    removed = removed + redis.call('UNLINK', unpack(entries))
  end
end
redis.call('UNLINK', KEYS[1])
return removed
"#;

/// What a read found.
enum Read {
    /// A value the index names.
    Value(Bytes),
    /// Readable when checked, gone when read (purged in between).
    Gone,
    /// The lookup script's verdict: 0, 2, 3 or 4.
    Verdict(i64),
}

/// The channel every instance announces fills on (`f:<lease key>`: look
/// again; `r:<lease key>`: released without a write).
const FILLS_CHANNEL: &str = "tower-cache-aside:fills";

/// A Lua script sent by hash, and in full when the server does not know it
/// yet (after a restart or on a new Cluster node).
#[derive(Debug, Clone)]
struct Script {
    source: Str,
    sha1: Str,
}

/// A script's keys and arguments.
type Command = (Vec<Key>, Vec<Value>);

impl Script {
    fn new(source: String) -> Script {
        Script {
            sha1: Str::from(fred::util::sha1_hash(&source)),
            source: Str::from(source),
        }
    }

    /// Runs the script on what `command` makes, which is called again only
    /// for the `NOSCRIPT` retry, so that the common case builds its keys
    /// once and moves them into the command.
    async fn run<R: fred::types::FromValue>(
        &self,
        client: &Client,
        command: impl Fn() -> Command,
    ) -> Result<R, Error> {
        let (keys, args) = command();
        match client
            .evalsha::<R, _, _, _>(self.sha1.clone(), keys, Value::Array(args))
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                let (keys, args) = command();
                // Boxed: a rare path should not make every caller's future
                // (moved into a box of its own on every call) larger.
                Ok(Box::pin(client.eval(self.source.clone(), keys, Value::Array(args))).await?)
            }
            result => Ok(result?),
        }
    }
}

/// `<prefix>{<resource>}<suffix...>` in one exactly sized allocation.
fn name(resource: &ResourceKey, suffix: &[&[u8]]) -> Bytes {
    let (prefix, path) = (resource.prefix().as_bytes(), resource.resource().as_bytes());
    let len = prefix.len() + path.len() + 2 + suffix.iter().map(|s| s.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(prefix);
    out.push(b'{');
    out.extend_from_slice(path);
    out.push(b'}');
    for part in suffix {
        out.extend_from_slice(part);
    }
    // Exactly full, so the conversion keeps the allocation as it is.
    Bytes::from(out)
}

fn entry_name(key: &EntryKey) -> Key {
    Key::from(name(key.resource(), &[b":v:", key.variant().as_bytes()]))
}

fn index_name(resource: &ResourceKey) -> Key {
    Key::from(name(resource, &[b":idx"]))
}

fn lease_name(key: &EntryKey) -> Key {
    Key::from(name(
        key.resource(),
        &[b":lease:", key.variant().as_bytes()],
    ))
}

/// A lease as the lookup script reads it: the token, then the ttl in ms.
fn lease_arg(lease: &LeaseRequest) -> Value {
    let ttl = u64::try_from(lease.ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64);
    let ttl = Decimal::new(ttl);
    let mut arg = Vec::with_capacity(32 + ttl.as_bytes().len());
    arg.extend_from_slice(lease.token.as_bytes());
    arg.extend_from_slice(ttl.as_bytes());
    Value::Bytes(Bytes::from(arg))
}

fn token_arg(token: &LeaseToken) -> Value {
    Value::Bytes(Bytes::copy_from_slice(token.as_bytes()))
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
    max_value_bytes: u64,
    scripts: Arc<Scripts>,
    hints: Arc<Hints>,
    notifier: Arc<Notifier>,
}

#[derive(Debug)]
struct Scripts {
    /// Returns small values inline.
    lookup: Script,
    /// Never returns a value: for lookups that send their `GET` along.
    check: Script,
    get_many: Script,
    lease: Script,
    store: Script,
    release: Script,
    purge: Script,
}

impl Scripts {
    /// The scripts, the reads bounded to `max_value_bytes`.
    fn new(max_value_bytes: u64) -> Scripts {
        let make = |source: &str, inline: i64| {
            Script::new(
                expand(source)
                    .replace("MAX_VALUE_BYTES", &max_value_bytes.to_string())
                    .replace("INLINE_BYTES", &inline.to_string()),
            )
        };
        Scripts {
            lookup: make(LOOKUP_SCRIPT, INLINE_BYTES as i64),
            check: make(LOOKUP_SCRIPT, -1),
            get_many: make(GET_MANY_SCRIPT, -1),
            lease: make(LEASE_SCRIPT, -1),
            store: make(STORE_SCRIPT, -1),
            release: make(RELEASE_SCRIPT, -1),
            purge: make(PURGE_SCRIPT, -1),
        }
    }
}

/// Writes the shared pieces ([`READABLE`], [`INDEX`]) into a script, at
/// the lines that name them.
fn expand(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 512);
    for line in source.lines() {
        let (indent, name) = line.split_at(line.len() - line.trim_start().len());
        let piece = match name {
            "READABLE" => READABLE,
            "INDEX" => INDEX,
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        for piece_line in piece.lines() {
            out.push_str(indent);
            out.push_str(piece_line);
            out.push('\n');
        }
    }
    out
}
/// Listens to the fills channel on a connection of its own (started on the
/// first lookup that has to wait) and wakes the local waiters.
#[derive(Debug)]
struct Notifier {
    waiters: Waiters,
    started: std::sync::atomic::AtomicBool,
    /// Whether the subscription is in place (announcements are heard).
    subscribed: tokio::sync::watch::Sender<bool>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            waiters: Waiters::default(),
            started: std::sync::atomic::AtomicBool::new(false),
            subscribed: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Notifier {
    /// Starts the subscriber if need be and waits (at most `timeout`) until
    /// it listens, so that no announcement made after this returns is
    /// missed. Past the timeout, waits end at their bound.
    async fn listen(self: &Arc<Self>, client: &Client, timeout: Duration) {
        self.start(client);
        let mut subscribed = self.subscribed.subscribe();
        let _ = tokio::time::timeout(timeout, subscribed.wait_for(|s| *s)).await;
    }

    /// Starts the subscriber once; it subscribes again after every
    /// reconnection.
    fn start(self: &Arc<Self>, client: &Client) {
        use std::sync::atomic::Ordering;
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.started.store(false, Ordering::Release);
            return;
        };
        let subscriber = SubscriberClient::new(
            client.client_config(),
            Some(client.perf_config()),
            Some(client.connection_config().clone()),
            Some(
                client
                    .client_reconnect_policy()
                    .unwrap_or_else(|| ReconnectPolicy::new_exponential(0, 100, 5_000, 2)),
            ),
        );
        let notifier = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut messages = subscriber.message_rx();
            let _connection = subscriber.connect();
            let _resubscribe = subscriber.manage_subscriptions();
            let mut delay = Duration::from_millis(100);
            while let Err(error) = subscriber.subscribe(FILLS_CHANNEL).await {
                tracing::warn!(target: "tower_cache_aside", %error, "cannot subscribe to fill announcements yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                if notifier.strong_count() == 0 {
                    return;
                }
            }
            if let Some(notifier) = notifier.upgrade() {
                notifier.subscribed.send_replace(true);
            }
            loop {
                let message = messages.recv().await;
                let Some(notifier) = notifier.upgrade() else {
                    let _ = subscriber.quit().await;
                    return;
                };
                match message {
                    Ok(message) => {
                        let Some(text) = message.value.as_str() else { continue };
                        if let Some(lease) = text.strip_prefix("f:") {
                            notifier.waiters.wake(lease, FillEnd::Filled);
                        } else if let Some(lease) = text.strip_prefix("r:") {
                            notifier.waiters.wake(lease, FillEnd::Released);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        notifier.waiters.wake_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// Largest value read back by default: well above the layer's default body
/// cap (1 MiB) plus headers.
const DEFAULT_MAX_VALUE_BYTES: u64 = 32 * 1024 * 1024;

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
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            scripts: Arc::new(Scripts::new(DEFAULT_MAX_VALUE_BYTES)),
            hints: Arc::default(),
            notifier: Arc::default(),
        }
    }

    /// Connects a new client to `url` (`redis://`, `rediss://` with a TLS
    /// feature of fred, `redis-cluster://`, …) with the crate's defaults:
    /// reconnect forever with exponential back-off (100 ms to 5 s) and a
    /// 1 s command timeout. Fails when the first connection fails.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        let client = Self::client_for(url, true)?;
        client.init().await?;
        Ok(RedisStore::from(client))
    }

    /// The largest value a read accepts (default 32 MiB); a larger one at
    /// an entry's key is deleted unread and is a miss. Raise it if you
    /// raise the layer's `max_body_bytes` near it.
    pub fn with_max_value_bytes(mut self, bytes: u64) -> RedisStore {
        self.max_value_bytes = bytes.min(i64::MAX as u64);
        self.scripts = Arc::new(Scripts::new(self.max_value_bytes));
        self
    }

    /// Like [`connect`](Self::connect), but does not wait for Redis: the
    /// client connects in the background and keeps trying (back-off up to
    /// 5 s), so an app starts while Redis is down and starts caching when it
    /// answers. Until then the layer serves from the origin. Fails only on a
    /// bad URL. Call it within a Tokio runtime.
    pub fn connect_lazy(url: &str) -> Result<RedisStore, Error> {
        let client = Self::client_for(url, false)?;
        // The handle of the connection task is not needed: it runs until
        // the client quits.
        let _connection = client.connect();
        Ok(RedisStore::from(client))
    }

    /// A client with the crate's defaults. With `fail_fast` off it keeps
    /// trying from the first connection on, not only after a connection
    /// that once worked.
    fn client_for(url: &str, fail_fast: bool) -> Result<Client, Error> {
        let config = Config {
            fail_fast,
            ..Config::from_url(url)?
        };
        Ok(Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_secs(1);
            })
            .build()?)
    }

    fn client(&self) -> &Client {
        match &self.connection {
            Connection::Client(client) => client,
            Connection::Pool(pool) => pool.next(),
        }
    }

    /// Waits on another holder's lease: registers, then checks that the
    /// lease is still held (a fill that ended in between is not waited for).
    async fn busy(
        &self,
        client: &Client,
        key: &EntryKey,
        lease: &LeaseRequest,
    ) -> Result<Lookup, Error> {
        self.notifier.listen(client, lease.ttl).await;
        let lease_key = lease_name(key);
        let wait = self
            .notifier
            .waiters
            .register(&String::from_utf8_lossy(lease_key.as_bytes()));
        let held: i64 = client.exists(lease_key).await?;
        if held == 0 {
            return Ok(Lookup::Busy(Box::pin(async { FillEnd::Filled })));
        }
        Ok(Lookup::Busy(wait))
    }

    /// Runs the lookup script, with the lease `lease` asks for, and reads
    /// the value: inline for a small one; for a large one with a `GET`
    /// sent along (when [`Hints`] expected it to be large) or after.
    async fn read(
        &self,
        client: &Client,
        key: &EntryKey,
        lease: Option<&LeaseRequest>,
    ) -> Result<Read, Error> {
        let hash = Hints::hash(key);
        let command = || {
            (
                vec![entry_name(key), index_name(key.resource()), lease_name(key)],
                vec![lease.map_or_else(|| Value::Bytes(Bytes::new()), lease_arg)],
            )
        };
        if self.hints.is_large(hash) {
            // Boxed, as are the other ways below that most lookups do not
            // take: the common one's future stays small (see `Script::run`).
            let (verdict, value) = Box::pin(self.check_and_get(client, key, command)).await?;
            return Ok(match (verdict, value) {
                (1, Some(value)) => {
                    self.hints
                        .set_large(hash, value.len() as u64 > INLINE_BYTES);
                    Read::Value(value)
                }
                (1, None) => Read::Gone,
                (verdict, _) => Read::Verdict(verdict),
            });
        }
        let reply: Value = self.scripts.lookup.run(client, command).await?;
        match reply {
            Value::Bytes(value) => Ok(Read::Value(value)),
            Value::String(value) => Ok(Read::Value(value.into_inner())),
            Value::Integer(1) => {
                // Readable but large: read it now, and send the next
                // lookup's `GET` along with its script.
                self.hints.set_large(hash, true);
                let value: Option<Bytes> = Box::pin(client.get(entry_name(key))).await?;
                Ok(match self.within_bound(value) {
                    Some(value) => Read::Value(value),
                    None => Read::Gone,
                })
            }
            Value::Integer(verdict) => Ok(Read::Verdict(verdict)),
            _ => Err(Error::Store("unexpected lookup script reply".into())),
        }
    }

    /// The check script (which never returns the value) and a `GET` of the
    /// entry, in one round trip: both go out on one connection, the script
    /// first (the `join` polls, and so queues, its futures in order), so
    /// the `GET` reads what the script judged, or something newer.
    async fn check_and_get(
        &self,
        client: &Client,
        key: &EntryKey,
        command: impl Fn() -> Command,
    ) -> Result<(i64, Option<Bytes>), Error> {
        let script = &self.scripts.check;
        let (keys, args) = command();
        let (verdict, value) = futures_util::future::join(
            client.evalsha::<i64, _, _, _>(script.sha1.clone(), keys, Value::Array(args)),
            client.get::<Option<Bytes>, _>(entry_name(key)),
        )
        .await;
        let (verdict, value) = match verdict {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                // The server does not know the script yet (a restart, a new
                // node): send it in full, then read, one after the other.
                let verdict: i64 = script.run(client, command).await?;
                (
                    verdict,
                    client.get::<Option<Bytes>, _>(entry_name(key)).await?,
                )
            }
            verdict => (verdict?, value?),
        };
        Ok((verdict, self.within_bound(value)))
    }

    /// A value read by a plain `GET` after the script checked its size: one
    /// that grew past the bound in between is not used.
    fn within_bound(&self, value: Option<Bytes>) -> Option<Bytes> {
        value.filter(|v| v.len() as u64 <= self.max_value_bytes)
    }

    async fn store(
        &self,
        key: &EntryKey,
        value: Bytes,
        ttl: Duration,
        token: Option<&LeaseToken>,
    ) -> Result<bool, Error> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let stored: i64 = self
            .scripts
            .store
            .run(self.client(), || {
                (
                    vec![entry_name(key), index_name(key.resource()), lease_name(key)],
                    vec![
                        Value::Bytes(value.clone()),
                        ttl_ms.into(),
                        token.map_or(Value::Bytes(Bytes::new()), token_arg),
                        Value::from_static_str(FILLS_CHANNEL),
                    ],
                )
            })
            .await?;
        Ok(stored == 1)
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            match self.read(self.client(), key, None).await? {
                Read::Value(value) => Ok(Some(value)),
                _ => Ok(None),
            }
        })
    }

    fn put<'a>(&'a self, key: &'a EntryKey, value: Bytes, ttl: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.store(key, value, ttl, None).await?;
            Ok(())
        })
    }

    fn lookup<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let client = self.client();
            let mut read = self.read(client, key, Some(lease)).await?;
            if let Read::Gone = read {
                // Purged between the check and the read: look again, which
                // now takes the lease (boxed: a rare path, see `Script::run`).
                read = Box::pin(self.read(client, key, Some(lease))).await?;
            }
            match read {
                Read::Value(value) => Ok(Lookup::Hit(value)),
                // Gone twice in a row: call the origin, and store nothing.
                Read::Gone => Ok(Lookup::Unleased),
                Read::Verdict(2) => Ok(Lookup::Lease),
                Read::Verdict(4) => Ok(Lookup::Unleased),
                Read::Verdict(3) => Box::pin(self.busy(client, key, lease)).await,
                Read::Verdict(_) => Err(Error::Store("unexpected lookup script reply".into())),
            }
        })
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let lease_ttl = i64::try_from(lease.ttl.as_millis())
                .unwrap_or(i64::MAX)
                .max(1);
            let taken: i64 = self
                .scripts
                .lease
                .run(self.client(), || {
                    (
                        vec![index_name(key.resource()), lease_name(key)],
                        vec![token_arg(&lease.token), lease_ttl.into()],
                    )
                })
                .await?;
            Ok(taken == 1)
        })
    }

    fn fill<'a>(
        &'a self,
        key: &'a EntryKey,
        value: Bytes,
        ttl: Duration,
        token: &'a LeaseToken,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.store(key, value, ttl, Some(token)))
    }

    fn release<'a>(&'a self, key: &'a EntryKey, token: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.scripts
                .release
                .run::<i64>(self.client(), || {
                    (
                        vec![lease_name(key), index_name(key.resource())],
                        vec![token_arg(token), Value::from_static_str(FILLS_CHANNEL)],
                    )
                })
                .await?;
            Ok(())
        })
    }

    /// One script per Cluster slot (one in all on a standalone server),
    /// sent concurrently; each entry is read as `get` reads it.
    fn get_many<'a>(&'a self, keys: &'a [EntryKey]) -> StoreFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let client = self.client();
            let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let slot = if client.is_clustered() {
                    fred::util::redis_keyslot(entry_name(key).as_bytes())
                } else {
                    0
                };
                match groups.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((slot, vec![i])),
                }
            }
            let reads = groups.iter().map(|(_, members)| async move {
                let values: Vec<Value> = self
                    .scripts
                    .get_many
                    .run(client, || {
                        let mut names = Vec::with_capacity(2 * members.len());
                        for &i in members {
                            names.push(entry_name(&keys[i]));
                            names.push(index_name(keys[i].resource()));
                        }
                        (names, vec![])
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
            self.client().unlink::<i64, _>(entry_name(key)).await?;
            Ok(())
        })
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let removed: i64 = self
                .scripts
                .purge
                .run(self.client(), || (vec![index_name(resource)], vec![]))
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
                    Some(async move {
                        self.scripts
                            .purge
                            .run::<i64>(client, || (vec![Key::from(index.as_str())], vec![]))
                            .await
                    })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::key::{KeyConfig, QueryKey};

    fn keys() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("tca:"),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    #[test]
    fn the_lease_argument_is_the_token_then_the_ttl() {
        for (ttl, text) in [
            (Duration::from_millis(5000), "5000".to_owned()),
            (Duration::ZERO, "1".to_owned()),
            (Duration::from_secs(u64::MAX), i64::MAX.to_string()),
        ] {
            let lease = LeaseRequest {
                token: LeaseToken::new(),
                ttl,
            };
            let Value::Bytes(arg) = lease_arg(&lease) else {
                panic!("bytes");
            };
            assert_eq!(&arg[..32], lease.token.as_bytes());
            assert_eq!(&arg[32..], text.as_bytes());
        }
    }

    #[test]
    fn hints_are_per_entry_and_cleared_when_small() {
        let hints = Hints::default();
        let (a, b) = (keys().named_key("user:1"), keys().named_key("user:2"));
        let (ha, hb) = (Hints::hash(&a), Hints::hash(&b));
        assert_ne!(ha, hb, "typed keys share a variant, not a hint");
        assert!(!hints.is_large(ha));
        hints.set_large(ha, true);
        assert!(hints.is_large(ha));
        assert!(!hints.is_large(hb));
        hints.set_large(ha, false);
        assert!(!hints.is_large(ha));
    }

    #[test]
    fn shared_pieces_are_written_into_every_script() {
        let scripts = Scripts::new(1000);
        let all = [
            &scripts.lookup,
            &scripts.check,
            &scripts.get_many,
            &scripts.lease,
            &scripts.store,
            &scripts.release,
            &scripts.purge,
        ];
        for script in all {
            let text: &str = &script.source;
            for left in ["READABLE\n", "INDEX\n", "MAX_VALUE_BYTES", "INLINE_BYTES"] {
                assert!(!text.contains(left), "{left} left in:\n{text}");
            }
        }
        let lookup: &str = &scripts.lookup.source;
        assert!(lookup.contains("and redis.call('ZSCORE', index, entry)) then"));
        assert!(lookup.contains("\n  redis.call('ZADD', index, now + ttl, member)\n"));
        assert!(lookup.contains("size > 1000") && lookup.contains("size <= 2048"));
        let get_many: &str = &scripts.get_many.source;
        assert!(get_many.contains("\n      and redis.call('ZSCORE', index, entry)) then\n"));
        let store: &str = &scripts.store.source;
        assert!(store.contains("\nif redis.call('PTTL', index) < ttl then\n"));
    }

    #[test]
    fn names_follow_the_key_layout() {
        let key = keys().named_key("user:1");
        let variant = key.variant().to_owned();
        let text = |k: Key| String::from_utf8(k.as_bytes().to_vec()).unwrap();
        assert_eq!(
            text(entry_name(&key)),
            format!("tca:{{user:1}}:v:{variant}")
        );
        assert_eq!(text(index_name(key.resource())), "tca:{user:1}:idx");
        assert_eq!(
            text(lease_name(&key)),
            format!("tca:{{user:1}}:lease:{variant}")
        );
    }
}
