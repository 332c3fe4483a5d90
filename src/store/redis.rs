//! The Redis store, through fred. Every Redis command and Lua script of the
//! crate lives in this file.
//!
//! Key layout (see ARCHITECTURE.md): one hash per resource, and beside it,
//! under the same hash tag (so in one Cluster slot), the expiry of each of
//! its fields:
//!
//! ```text
//! <prefix>{<resource>}     hash: v:<variant> = an entry, l:<variant> = its fill lease (the token)
//! <prefix>{<resource>}:t   sorted set: each field of the hash, scored by its expiry (ms, Redis's clock)
//! ```
//!
//! The hash is its own index: a purge of a resource is one `UNLINK` of the
//! two keys, which drops every variant and every lease at once, and
//! `maxmemory` eviction can only take a resource whole. So nothing that a
//! purge cannot find is ever there to be served, and a hit on an entry
//! seen fresh lately is one plain `HGET` (see [`Hints`]); other reads go
//! through the lookup script, which also checks expiry and takes the fill
//! lease on a miss.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::WithOptions;
use fred::clients::{Client, Pool, SubscriberClient};
use fred::error::ErrorKind;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, LuaInterface, PubsubInterface, SortedSetsInterface,
};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::scan::Scanner;
use fred::types::Builder;
use fred::types::{ClusterHash, CustomCommand, Key, Value};
use futures_util::StreamExt;

use super::deadline::{Deadlines, Elapsed};
use super::hints::{resource_hash, HintKey, Hints, DEFAULT_ENTRIES};
use super::waiters::Waiters;
use super::{FillEnd, LeaseRequest, LeaseToken, Lookup, Store, StoreFuture};
use crate::key::{EntryKey, ResourceKey, ResourcePattern};
use crate::util::decimal::Decimal;
use crate::util::inline::InlineBytes;
use crate::Error;

/// Looks an entry up, and on a miss takes its fill lease, in one round
/// trip.
///
/// A small value (at most `INLINE_BYTES`) is returned by the script
/// itself. A larger one is not: Lua copies every string it touches, which
/// made a 16 KiB hit cost Redis four times a `GET`. The script then only
/// says the entry is readable, and the value is read by a plain `HGET`.
///
/// KEYS: hash, times. ARGV: the variant, and the lease as the token (32
/// bytes) followed by its ttl in ms ('' = no lease, only look).
/// Returns `{ms left, value}` (readable, inline), `{ms left}` (readable,
/// not inline), or 0 (not readable, no lease asked), 2 (lease taken), 3
/// (lease held elsewhere), 4 (the server refuses writes, e.g. a full
/// `maxmemory`: no lease).
const LOOKUP_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
local field = 'v:' .. ARGV[1]
CLOCK
OURS
READABLE
if size then
  if size <= INLINE_BYTES then
    return {left, redis.call('HGET', hash, field)}
  end
  return {left}
end
if ARGV[2] == '' then
  return 0
end
TAKE
"#;

/// Takes an entry's fill lease whether or not the entry exists (to refresh
/// a stale one). KEYS: hash, times. ARGV: the variant, the lease (token
/// and ttl, as for the lookup). Returns 2 (taken), 3 (held elsewhere) or 4
/// (refused).
const LEASE_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
CLOCK
OURS
TAKE
"#;

/// Sets `now`, ms on Redis's clock; written into the scripts where a line
/// says `CLOCK`.
const CLOCK: &str = r#"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"#;

/// Deletes `hash` and `times` when they hold another type than ours (not
/// ours: another program's, or an attacker's), so the commands after it
/// cannot fail on them; written where a line says `OURS`.
const OURS: &str = r#"local kind = redis.call('TYPE', hash).ok
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', hash)
end
kind = redis.call('TYPE', times).ok
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', times)
end"#;

/// Whether the entry `field` of `hash` may be read (written where a line
/// says `READABLE`, after `hash`, `times`, `field` and `now` are set, and
/// `OURS`): leaves `size` its length and `left` the ms it has left while it
/// is there and unexpired, `size` nil otherwise. A value over the size
/// bound is deleted unread.
const READABLE: &str = r#"local size = redis.call('HSTRLEN', hash, field)
local left = nil
if size > MAX_VALUE_BYTES then
  redis.call('HDEL', hash, field)
  size = nil
else
  local expiry = redis.call('ZSCORE', times, field)
  if expiry then
    left = tonumber(expiry) - now
  end
  if not left or left <= 0 or (size == 0 and redis.call('HEXISTS', hash, field) == 0) then
    size = nil
  end
end"#;

/// Takes the lease of the entry `ARGV[1]` with the lease argument
/// `ARGV[2]` unless someone holds it unexpired, and returns 2 (taken), 3
/// (held) or 4 (refused); written where a line says `TAKE`, after `hash`,
/// `times`, `now` and `OURS`.
const TAKE: &str = r#"local lease = 'l:' .. ARGV[1]
local held = redis.call('ZSCORE', times, lease)
if held and tonumber(held) > now and redis.call('HEXISTS', hash, lease) == 1 then
  return 3
end
local ttl = tonumber(string.sub(ARGV[2], 33))
local taken = redis.pcall('HSET', hash, lease, string.sub(ARGV[2], 1, 32))
if type(taken) == 'table' and taken.err then
  return 4
end
redis.call('ZADD', times, now + ttl, lease)
EXTEND
return 2"#;

/// Makes `hash` and `times` live at least `ttl` ms more; written where a
/// line says `EXTEND`.
const EXTEND: &str = r#"if redis.call('PTTL', hash) < ttl then
  redis.call('PEXPIRE', hash, ttl)
end
if redis.call('PTTL', times) < ttl then
  redis.call('PEXPIRE', times, ttl)
end"#;

/// Reads several entries of one Cluster slot, each under the same rules as
/// `LOOKUP_SCRIPT`, without leases. KEYS: hash, times, hash, times, …
/// ARGV: one variant per entry. Returns one value or nil per entry. Values
/// pass through Lua: the typed cache's values are small, and one round
/// trip per slot matters more here.
const GET_MANY_SCRIPT: &str = r#"
CLOCK
local out = {}
for i = 1, #ARGV do
  local value = false
  local hash, times = KEYS[2 * i - 1], KEYS[2 * i]
  local field = 'v:' .. ARGV[i]
  OURS
  READABLE
  if size then
    value = redis.call('HGET', hash, field)
  end
  out[#out + 1] = value
end
return out
"#;

/// Writes an entry. With a token, only while that token holds the entry's
/// lease unexpired (else nothing is written and 0 returned); the lease is
/// then dropped and the fill announced. Drops up to 64 expired fields of
/// the resource on the way. KEYS: hash, times. ARGV: variant, value, ttl
/// in ms, token ('' = unfenced), channel.
const STORE_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
CLOCK
OURS
local lease = 'l:' .. ARGV[1]
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', times, lease)
  if redis.call('HGET', hash, lease) ~= ARGV[4] or not expiry or tonumber(expiry) <= now then
    redis.call('PUBLISH', ARGV[5], 'f:' .. hash .. ':' .. lease)
    return 0
  end
  redis.call('HDEL', hash, lease)
  redis.call('ZREM', times, lease)
end
local field, ttl = 'v:' .. ARGV[1], tonumber(ARGV[3])
redis.call('HSET', hash, field, ARGV[2])
redis.call('ZADD', times, now + ttl, field)
EXTEND
local old = redis.call('ZRANGEBYSCORE', times, '-inf', now, 'LIMIT', 0, 64)
if #old > 0 then
  redis.call('HDEL', hash, unpack(old))
  redis.call('ZREM', times, unpack(old))
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[5], 'f:' .. hash .. ':' .. lease)
end
return 1
"#;

/// Drops a lease if the token still holds it, and announces it.
/// KEYS: hash, times. ARGV: variant, token, channel.
const RELEASE_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
OURS
local lease = 'l:' .. ARGV[1]
if redis.call('HGET', hash, lease) == ARGV[2] then
  redis.call('HDEL', hash, lease)
  redis.call('ZREM', times, lease)
  redis.call('PUBLISH', ARGV[3], 'r:' .. hash .. ':' .. lease)
  return 1
end
return 0
"#;

/// Removes a resource: its hash (every entry and lease) and its expiries,
/// and announces it, if there was anything, unless ARGV[2] is ''. KEYS: hash, times. ARGV:
/// channel, announce. Returns how many unexpired entries (not leases)
/// there were, by their expiries.
const PURGE_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
CLOCK
local removed = 0
local live = redis.pcall('ZRANGEBYSCORE', times, '(' .. now, '+inf')
if live.err == nil then
  for _, field in ipairs(live) do
    if string.sub(field, 1, 2) == 'v:' then
      removed = removed + 1
    end
  end
end
if redis.call('UNLINK', hash, times) > 0 and ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[1], 'p:' .. hash)
end
return removed
"#;

/// Values up to this size come back inline from the lookup script. Above
/// it, Lua's copies cost Redis more than a second command costs the app
/// (measured with redis-benchmark, 16 commands pipelined: the script's
/// value costs about 1.2 µs per KiB, a `GET`'s 0.3).
const INLINE_BYTES: u64 = 2048;

/// What a read found.
enum Read {
    /// A readable value.
    Value(Bytes),
    /// Readable when checked, gone when read (purged in between).
    Gone,
    /// The lookup script's verdict: 0, 2, 3 or 4.
    Verdict(i64),
}

/// The channel every instance announces on: `f:<lease>` (a fill ended
/// with a write: look again), `r:<lease>` (released without a write),
/// `p:<hash>` (a resource was purged), `P` (a pattern purge). `<lease>` is
/// `<hash>:l:<variant>`.
const EVENTS_CHANNEL: &str = "tower-cache-aside:events";

/// The message of a pattern purge.
const PATTERN_PURGED: &str = "P";

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

    /// Runs the script on a resource's two keys (its hash, then its expiry
    /// set) and what `args` makes.
    async fn run_on<R: fred::types::FromValue + 'static>(
        &self,
        call: &Call<'_>,
        names: &Names,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<R, Error> {
        self.run(call, || (names.keys().into(), args())).await
    }

    /// Runs the script on what `command` makes, which is called again only
    /// for the `NOSCRIPT` retry, so that the common case builds its keys
    /// once and moves them into the command.
    async fn run<R: fred::types::FromValue + 'static>(
        &self,
        call: &Call<'_>,
        command: impl Fn() -> Command,
    ) -> Result<R, Error> {
        let (keys, args) = command();
        match Box::pin(self.send::<R>("EVALSHA", &self.sha1, call, keys, args)).await {
            Err(Error::Redis(error)) if error.details().starts_with("NOSCRIPT") => {
                let (keys, args) = command();
                Box::pin(self.send::<R>("EVAL", &self.source, call, keys, args)).await
            }
            result => result,
        }
    }

    /// `EVALSHA` or `EVAL` as a custom command: fred's `LuaInterface` is
    /// not implemented for a client with options, so its methods would
    /// drop the call's timeout. Routed by the first key's slot.
    async fn send<R: fred::types::FromValue + 'static>(
        &self,
        command: &'static str,
        script: &Str,
        call: &Call<'_>,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let slot = keys
            .first()
            .map(|key| fred::util::redis_keyslot(key.as_bytes()));
        let mut values = Vec::with_capacity(2 + keys.len() + args.len());
        values.push(Value::from(script.clone()));
        values.push(Value::Integer(keys.len() as i64));
        values.extend(keys.into_iter().map(|key| Value::Bytes(key.into_bytes())));
        values.extend(args);
        let command = CustomCommand::new_static(
            command,
            slot.map_or(ClusterHash::Random, ClusterHash::Custom),
            false,
        );
        let client = call.client()?;
        call.result(client.custom::<R, Value>(command, values).await)
    }
}

/// One store call's way to Redis: the client its commands go through and,
/// on a store bounded by [`Store::bounded`], its deadline.
///
/// A hinted read's `HGET` is watched by the store's [`Deadlines`] (no
/// timer); every other command carries the time its call has left as its
/// fred timeout: that is the call's only timer (fred arms one per command
/// anyway).
struct Call<'a> {
    client: &'a Client,
    /// The call's bound, and when the call started.
    bound: Option<(Duration, std::time::Instant)>,
    /// Whether a command was sent already (the first one gets the whole
    /// bound, with no clock read).
    sent: std::sync::atomic::AtomicBool,
}

impl<'a> Call<'a> {
    fn new(client: &'a Client, bound: Option<Duration>) -> Call<'a> {
        Call {
            client,
            bound: bound.map(|bound| (bound, std::time::Instant::now())),
            sent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A command's result, with fred's timeout of a bounded call reported
    /// as the call's [`Error::Timeout`].
    fn result<T>(&self, result: Result<T, fred::error::Error>) -> Result<T, Error> {
        result.map_err(|error| match self.bound {
            Some((bound, _)) if *error.kind() == ErrorKind::Timeout => Error::Timeout(bound),
            _ => Error::Redis(error),
        })
    }

    /// The client for the call's next command, with the time the call has
    /// left as its timeout; [`Error::Timeout`] when none is left.
    fn client(&self) -> Result<WithOptions<Client>, Error> {
        let mut options = Options::default();
        if let Some((bound, started)) = self.bound {
            let left = if self.sent.swap(true, std::sync::atomic::Ordering::Relaxed) {
                bound.saturating_sub(started.elapsed())
            } else {
                bound
            };
            if left.is_zero() {
                return Err(Error::Timeout(bound));
            }
            options.timeout = Some(left);
        }
        Ok(self.client.with_options(&options))
    }

    /// The client for the call's next command and, when it is the call's
    /// first and the store's watchdog `deadlines` runs, the call's deadline
    /// for the watchdog to keep: the command then carries no fred timeout
    /// (cheaper: see `deadline.rs`). Otherwise as [`Call::client`], with no
    /// deadline. A hit is one such first command.
    fn watched_client(
        &self,
        deadlines: &Deadlines,
    ) -> Result<(WithOptions<Client>, Option<std::time::Instant>), Error> {
        let at = self
            .bound
            .and_then(|(bound, started)| started.checked_add(bound));
        match at {
            Some(at)
                if deadlines.running()
                    && !self.sent.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                let options = Options {
                    // Zero: no fred timeout, not even the client's default.
                    timeout: Some(Duration::ZERO),
                    ..Options::default()
                };
                Ok((self.client.with_options(&options), Some(at)))
            }
            _ => Ok((self.client()?, None)),
        }
    }

    /// The error of a bounded call that ran out of time.
    fn timeout(&self) -> Error {
        Error::Timeout(self.bound.map_or(Duration::ZERO, |(bound, _)| bound))
    }

    /// At most `wait`, and no longer than the call has left.
    fn within(&self, wait: Duration) -> Duration {
        match self.bound {
            Some((bound, started)) => wait.min(bound.saturating_sub(started.elapsed())),
            None => wait,
        }
    }
}

/// The Redis names a call on one resource sends, as slices of one buffer:
/// the resource's hash `<prefix>{<resource>}` (its entries and leases),
/// its expiry set `<hash>:t` beside it and, for a call on one entry, the
/// entry's field (`v:` or `l:`, then the variant).
///
/// fred clones every argument it sends, and a `Bytes` made from a `Vec`
/// moves to a shared allocation of its own when first cloned, so separate
/// names cost two allocations each. Slices of one buffer cost one in all:
/// the buffer, held inline in its owner when it is short.
#[derive(Clone)]
struct Names {
    all: Bytes,
    /// Where the hash name ends (`:t` follows it).
    hash: usize,
}

impl Names {
    /// The names of a resource (no field).
    fn resource(resource: &ResourceKey) -> Names {
        Names::build(resource, None)
    }

    /// The names of an entry's resource and of its field `kind`.
    fn entry(kind: &[u8; 2], key: &EntryKey) -> Names {
        Names::build(key.resource(), Some((kind, key.variant_bytes())))
    }

    fn build(resource: &ResourceKey, field: Option<(&[u8; 2], &[u8])>) -> Names {
        let (prefix, path) = (resource.prefix().as_bytes(), resource.resource_bytes());
        let field_len = field.map_or(0, |(kind, variant)| kind.len() + variant.len());
        let mut all = NameBuffer::with_capacity(prefix.len() + path.len() + 4 + field_len);
        all.extend_from_slice(prefix);
        all.push(b'{');
        all.extend_from_slice(path);
        all.push(b'}');
        let hash = all.len();
        all.extend_from_slice(b":t");
        if let Some((kind, variant)) = field {
            all.extend_from_slice(kind);
            all.extend_from_slice(variant);
        }
        Names {
            all: Bytes::from_owner(Owner(all)),
            hash,
        }
    }

    /// The names of a resource from its hash's name (as `SCAN` finds it).
    fn of_hash(hash: &[u8]) -> Names {
        let mut all = NameBuffer::with_capacity(hash.len() + 2);
        all.extend_from_slice(hash);
        all.extend_from_slice(b":t");
        Names {
            all: Bytes::from_owner(Owner(all)),
            hash: hash.len(),
        }
    }

    /// The hash's name, borrowed.
    fn hash_name(&self) -> &[u8] {
        &self.all[..self.hash]
    }

    /// The hash.
    fn hash(&self) -> Key {
        Key::from(self.all.slice(..self.hash))
    }

    /// The hash and, beside it, its sorted set of field expiries: the two
    /// keys every script on a resource is given.
    fn keys(&self) -> [Key; 2] {
        [self.hash(), Key::from(self.all.slice(..self.hash + 2))]
    }

    /// The entry's field (empty for the names of a resource).
    fn field(&self) -> Bytes {
        self.all.slice(self.hash + 2..)
    }

    /// Where the entry's variant starts (after `:t` and the field's kind).
    fn variant_at(&self) -> usize {
        (self.hash + 4).min(self.all.len())
    }

    /// The entry's variant, as the scripts take it.
    fn variant(&self) -> Value {
        Value::Bytes(self.all.slice(self.variant_at()..))
    }

    /// Where this entry's hint lives.
    fn hint(&self) -> HintKey {
        HintKey::new(self.hash_name(), &self.all[self.variant_at()..])
    }
}

/// Room for the names of all but very long prefixes and resources inline.
type NameBuffer = InlineBytes<160>;

/// Owns a [`Names`] buffer for `Bytes::from_owner`.
struct Owner(NameBuffer);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A lease as the scripts read it: the token, then the ttl in ms.
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

/// How a lease is named in announcements: `<hash>:l:<variant>`, from the
/// names of its field.
fn lease_announced(lease: &Names) -> String {
    let mut name = String::from_utf8_lossy(lease.hash_name()).into_owned();
    name.push(':');
    name.push_str(&String::from_utf8_lossy(&lease.field()));
    name
}

#[derive(Clone)]
enum Connection {
    Client(Client),
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
    connection: Connection,
    /// Set on the views [`Store::bounded`] makes: every call's deadline.
    bound: Option<Duration>,
    max_value_bytes: u64,
    scripts: Arc<Scripts>,
    local: Arc<Local>,
}

#[derive(Debug)]
struct Scripts {
    lookup: Script,
    get_many: Script,
    lease: Script,
    store: Script,
    release: Script,
    purge: Script,
}

impl Scripts {
    /// Every script.
    fn all(&self) -> [&Script; 6] {
        [
            &self.lookup,
            &self.get_many,
            &self.lease,
            &self.store,
            &self.release,
            &self.purge,
        ]
    }

    /// The scripts, the reads bounded to `max_value_bytes`.
    fn new(max_value_bytes: u64) -> Scripts {
        let make = |source: &str| {
            Script::new(
                expand(source)
                    .replace("MAX_VALUE_BYTES", &max_value_bytes.to_string())
                    .replace("INLINE_BYTES", &INLINE_BYTES.to_string()),
            )
        };
        Scripts {
            lookup: make(LOOKUP_SCRIPT),
            get_many: make(GET_MANY_SCRIPT),
            lease: make(LEASE_SCRIPT),
            store: make(STORE_SCRIPT),
            release: make(RELEASE_SCRIPT),
            purge: make(PURGE_SCRIPT),
        }
    }
}

/// Writes the shared pieces ([`CLOCK`], [`OURS`], [`READABLE`], [`TAKE`],
/// [`EXTEND`]) into a script, at the lines that name them (pieces may name
/// pieces).
fn expand(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 1024);
    for line in source.lines() {
        let (indent, name) = line.split_at(line.len() - line.trim_start().len());
        let piece = match name {
            "CLOCK" => CLOCK,
            "OURS" => OURS,
            "READABLE" => READABLE,
            "TAKE" => TAKE,
            "EXTEND" => EXTEND,
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        for piece_line in expand(piece).lines() {
            out.push_str(indent);
            out.push_str(piece_line);
            out.push('\n');
        }
    }
    out
}

/// What this process keeps beside Redis: the hints of entries seen fresh,
/// the callers waiting on fills held elsewhere, and the subscription to
/// the events channel that keeps both up to date.
#[derive(Debug)]
struct Local {
    hints: Hints,
    /// The deadlines of hinted reads (see [`Call::watched_client`]).
    deadlines: Deadlines,
    waiters: Waiters,
    started: std::sync::atomic::AtomicBool,
    /// Whether the subscription is in place (announcements are heard).
    subscribed: tokio::sync::watch::Sender<bool>,
    /// Purge announcements heard so far.
    purges_heard: tokio::sync::watch::Sender<u64>,
}

impl Default for Local {
    fn default() -> Self {
        Local::with_hints(DEFAULT_ENTRIES)
    }
}

impl Local {
    fn with_hints(entries: usize) -> Local {
        Local {
            hints: Hints::with_capacity(entries),
            deadlines: Deadlines::default(),
            waiters: Waiters::default(),
            started: std::sync::atomic::AtomicBool::new(false),
            subscribed: tokio::sync::watch::Sender::new(false),
            purges_heard: tokio::sync::watch::Sender::new(0),
        }
    }

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
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
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
        let local = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut messages = subscriber.message_rx();
            let _connection = subscriber.connect();
            let _resubscribe = subscriber.manage_subscriptions();
            let mut delay = Duration::from_millis(100);
            while let Err(error) = subscriber.subscribe(EVENTS_CHANNEL).await {
                tracing::warn!(target: "tower_cache_aside", %error, "cannot subscribe to cache announcements yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                if local.strong_count() == 0 {
                    return;
                }
            }
            if let Some(local) = local.upgrade() {
                local.subscribed.send_replace(true);
            }
            // Made only now, so the first connection is not taken for a
            // reconnection.
            let mut reconnections = Some(subscriber.reconnect_rx());
            loop {
                let reconnected = async {
                    match reconnections.as_mut() {
                        Some(events) => events.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let message = tokio::select! {
                    message = messages.recv() => message,
                    reconnected = reconnected => {
                        // Announcements made while the connection was down
                        // (or past a lag) are lost: forget every hint, wake
                        // every waiter.
                        if let Some(local) = local.upgrade() {
                            local.lost_announcements();
                        }
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = reconnected {
                            // No more reconnection events will come.
                            reconnections = None;
                        }
                        continue;
                    }
                };
                let Some(local) = local.upgrade() else {
                    let _ = subscriber.quit().await;
                    return;
                };
                match message {
                    Ok(message) => {
                        if let Some(text) = message.value.as_bytes() {
                            local.heard(text);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        local.lost_announcements();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// After a hint was set: listen for purges, so that other instances'
    /// purges end it (not when hints are off: then only fill waits need
    /// the subscription, and they start it themselves).
    fn hinted(self: &Arc<Self>, client: &Client) {
        if self.hints.is_enabled() {
            self.start(client);
        }
    }

    /// Acts on one announcement.
    fn heard(&self, message: &[u8]) {
        let lossy = || String::from_utf8_lossy(&message[2..]);
        match message {
            [b'f', b':', ..] => self.waiters.wake(&lossy(), FillEnd::Filled),
            [b'r', b':', ..] => self.waiters.wake(&lossy(), FillEnd::Released),
            [b'p', b':', hash @ ..] => {
                self.hints.purged(resource_hash(hash));
                self.purges_heard.send_modify(|n| *n += 1);
            }
            _ if message == PATTERN_PURGED.as_bytes() => {
                self.hints.purged_all();
                self.purges_heard.send_modify(|n| *n += 1);
            }
            _ => {}
        }
    }

    fn lost_announcements(&self) {
        self.hints.purged_all();
        self.waiters.wake_all();
    }
}

/// Largest value read back by default: well above the layer's default body
/// cap (1 MiB) plus headers.
const DEFAULT_MAX_VALUE_BYTES: u64 = 32 * 1024 * 1024;

/// Keys asked for per `SCAN` call in a pattern purge; each page's
/// resources are purged before the next page is read, so memory stays
/// bounded.
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
            bound: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            scripts: Arc::new(Scripts::new(DEFAULT_MAX_VALUE_BYTES)),
            local: Arc::default(),
        }
    }

    /// Connects a new client to `url` (`redis://`, `rediss://` with a TLS
    /// feature of fred, `redis-cluster://`, …) with the crate's defaults:
    /// reconnect forever with exponential back-off (100 ms to 5 s) and a
    /// 1 s command timeout, and loads the store's Lua scripts (on every
    /// primary of a cluster), so that no first call pays a second round
    /// trip to send one in full. Fails when the first connection fails.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        let client = Self::client_for(url, true)?;
        client.init().await?;
        let store = RedisStore::from(client);
        store.load_scripts().await;
        Ok(store)
    }

    /// Loads every script by `SCRIPT LOAD`. Best effort: a script the
    /// server does not know when it is called is sent in full then.
    async fn load_scripts(&self) {
        let client = self.client();
        for script in self.scripts.all() {
            let loaded: Result<Value, _> = if client.is_clustered() {
                client.script_load_cluster(script.source.clone()).await
            } else {
                client.script_load(script.source.clone()).await
            };
            if let Err(error) = loaded {
                tracing::debug!(target: "tower_cache_aside", %error, "script not loaded ahead");
                return;
            }
        }
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
        self.local = Arc::new(Local::with_hints(entries));
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

    /// Purge announcements this store has heard from the events channel
    /// (its own included), for tests that must know a purge was heard
    /// before they look again. Not part of the API.
    #[doc(hidden)]
    pub fn purges_heard(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local.purges_heard.subscribe()
    }

    /// Starts listening to the events channel, and resolves once it
    /// listens (or after `timeout`). Not part of the API: the store starts
    /// listening by itself on its first hinted read or fill wait.
    #[doc(hidden)]
    pub async fn listen(&self, timeout: Duration) {
        self.local.listen(self.client(), timeout).await;
    }

    fn client(&self) -> &Client {
        match &self.connection {
            Connection::Client(client) => client,
            Connection::Pool(pool) => pool.next(),
        }
    }

    /// A new call: a client, and the call's deadline on a bounded view.
    fn call(&self) -> Call<'_> {
        Call::new(self.client(), self.bound)
    }

    /// Waits on another holder's lease: registers, then checks that the
    /// lease is still held (a fill that ended in between is not waited for).
    async fn busy(
        &self,
        call: &Call<'_>,
        key: &EntryKey,
        lease: &LeaseRequest,
    ) -> Result<Lookup, Error> {
        self.local.listen(call.client, call.within(lease.ttl)).await;
        let lease_names = Names::entry(b"l:", key);
        let wait = self.local.waiters.register(&lease_announced(&lease_names));
        let (hash, field) = (lease_names.hash(), lease_names.field());
        let client = call.client()?;
        let held: i64 = call.result(client.hexists(hash, field).await)?;
        if held == 0 {
            return Ok(Lookup::Busy(Box::pin(async { FillEnd::Filled })));
        }
        Ok(Lookup::Busy(wait))
    }

    /// Reads an entry: with a plain `HGET` when it was seen fresh lately
    /// (see [`Hints`]), else (or when that finds nothing) with the lookup
    /// script, which takes the lease `lease` asks for on a miss.
    async fn read(
        &self,
        call: &Call<'_>,
        key: &EntryKey,
        lease: Option<&LeaseRequest>,
    ) -> Result<Read, Error> {
        let hints = &self.local.hints;
        let names = Names::entry(b"v:", key);
        let hint = names.hint();
        let stamp = hints.stamp(&hint);
        if hints.is_fresh(&hint, stamp) {
            // Boxed: fred's command futures are large (5 KB for an `HGET`)
            // and would make every caller's future (moved into a box of its
            // own on every call) as large.
            let (client, deadline) = call.watched_client(&self.local.deadlines)?;
            let hget = Box::pin(client.hget(names.hash(), names.field()));
            let read = match deadline {
                Some(at) => match self.local.deadlines.watch(hget, at).await {
                    Ok(read) => call.result(read),
                    Err(Elapsed) => Err(call.timeout()),
                },
                None => call.result(hget.await),
            };
            match read {
                Ok(Some(value)) if self.within_bound(&value) => return Ok(Read::Value(value)),
                // Purged or evicted since (or replaced by something too
                // large, or not ours): the script finds out which, and
                // takes the lease on a miss.
                Ok(_) => hints.clear(&hint),
                Err(Error::Redis(error)) if error.details().starts_with("WRONGTYPE") => {
                    hints.clear(&hint)
                }
                Err(error) => return Err(error),
            }
        }
        let reply: Value = self
            .scripts
            .lookup
            .run_on(call, &names, || {
                vec![
                    names.variant(),
                    lease.map_or_else(|| Value::Bytes(Bytes::new()), lease_arg),
                ]
            })
            .await?;
        match reply {
            Value::Array(mut parts) if !parts.is_empty() && parts.len() <= 2 => {
                let left = parts[0].as_i64().unwrap_or(0).max(0);
                let value = match parts.pop() {
                    Some(Value::Bytes(value)) if parts.len() == 1 => value,
                    Some(Value::String(value)) if parts.len() == 1 => value.into_inner(),
                    // Readable but large: read it now.
                    _ => match call
                        .result(Box::pin(call.client()?.hget(names.hash(), names.field())).await)?
                    {
                        Some(value) if self.within_bound(&value) => value,
                        _ => return Ok(Read::Gone),
                    },
                };
                hints.set(&hint, stamp, Duration::from_millis(left as u64));
                self.local.hinted(call.client);
                Ok(Read::Value(value))
            }
            Value::Integer(verdict) => Ok(Read::Verdict(verdict)),
            _ => Err(Error::Store("unexpected lookup script reply".into())),
        }
    }

    /// A value read by a plain `HGET`, which cannot check its size first:
    /// one over the bound is not used.
    fn within_bound(&self, value: &Bytes) -> bool {
        value.len() as u64 <= self.max_value_bytes
    }

    async fn store(
        &self,
        key: &EntryKey,
        value: Bytes,
        ttl: Duration,
        token: Option<&LeaseToken>,
    ) -> Result<bool, Error> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let names = Names::entry(b"v:", key);
        let hint = names.hint();
        let stamp = self.local.hints.stamp(&hint);
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
                ]
            })
            .await?;
        if stored == 1 {
            self.local.hints.set(&hint, stamp, ttl);
            self.local.hinted(call.client);
        }
        Ok(stored == 1)
    }

    /// Runs the purge script on one resource's hash; `announce` publishes
    /// it to every instance (a pattern purge announces once, at the end).
    async fn purge_hash(
        &self,
        call: &Call<'_>,
        names: Names,
        announce: bool,
    ) -> Result<u64, Error> {
        let removed: i64 = self
            .scripts
            .purge
            .run_on(call, &names, || {
                vec![
                    Value::from_static_str(EVENTS_CHANNEL),
                    Value::from_static_str(if announce { "1" } else { "" }),
                ]
            })
            .await?;
        if announce {
            self.local.hints.purged(resource_hash(names.hash_name()));
        }
        Ok(u64::try_from(removed).unwrap_or(0))
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a EntryKey) -> StoreFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let call = self.call();
            match self.read(&call, key, None).await? {
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
            let call = self.call();
            let mut read = self.read(&call, key, Some(lease)).await?;
            if let Read::Gone = read {
                // Purged between the check and the read: look again, which
                // now takes the lease (boxed: a rare path, see `Script::run`).
                read = Box::pin(self.read(&call, key, Some(lease))).await?;
            }
            match read {
                Read::Value(value) => Ok(Lookup::Hit(value)),
                // Gone twice in a row: call the origin, and store nothing.
                Read::Gone => Ok(Lookup::Unleased),
                Read::Verdict(2) => Ok(Lookup::Lease),
                Read::Verdict(4) => Ok(Lookup::Unleased),
                Read::Verdict(3) => Box::pin(self.busy(&call, key, lease)).await,
                Read::Verdict(_) => Err(Error::Store("unexpected lookup script reply".into())),
            }
        })
    }

    fn lease<'a>(&'a self, key: &'a EntryKey, lease: &'a LeaseRequest) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let names = Names::entry(b"v:", key);
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
        Box::pin(self.store(key, value, ttl, Some(token)))
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
            let names = Names::entry(b"v:", key);
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
                    fred::util::redis_keyslot(Names::resource(key.resource()).hash_name())
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
                            let entry = Names::entry(b"v:", &keys[i]);
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
            let names = Names::entry(b"v:", key);
            self.local.hints.clear(&names.hint());
            let [hash, times] = names.keys();
            let field = names.field();
            // Two commands on one slot, sent together; the field goes
            // first, and an expiry left alone reads as nothing.
            let call = self.call();
            let client = call.client()?;
            let (removed, _) = futures_util::future::join(
                client.hdel::<i64, _, _>(hash, field.clone()),
                client.zrem::<i64, _, _>(times, field),
            )
            .await;
            call.result(removed).map(|_| ())
        })
    }

    fn purge_resource<'a>(&'a self, resource: &'a ResourceKey) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let call = self.call();
            self.purge_hash(&call, Names::resource(resource), true)
                .await
        })
    }

    /// Scans, then purges each match (`purge_matching` below).
    fn purge_pattern<'a>(&'a self, pattern: &'a ResourcePattern) -> StoreFuture<'a, u64> {
        let purge = self.purge_matching(pattern);
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

impl RedisStore {
    /// `SCAN MATCH <prefix>{<literal prefix>*}` on every primary (never
    /// `KEYS`), then the purge script on each resource hash the pattern
    /// matches, page by page; then one announcement for them all.
    async fn purge_matching(&self, pattern: &ResourcePattern) -> Result<u64, Error> {
        let call = self.call();
        let client = call.client;
        // Candidates: every resource under the pattern's literal start;
        // `matches` then decides (it also reaches long, hashed paths).
        // A resource never holds `{` or `}`, so the glob's closing `}`
        // leaves out the `:t` sets.
        let glob = format!("{}{{{}*}}", pattern.prefix(), pattern.literal_prefix());
        let resource_of = |hash: &str| -> Option<String> {
            let inner = hash.strip_prefix(pattern.prefix())?.strip_prefix('{')?;
            Some(inner.strip_suffix('}')?.to_owned())
        };
        let mut pages = if client.is_clustered() {
            client.scan_cluster(glob, Some(SCAN_COUNT), None).boxed()
        } else {
            client.scan(glob, Some(SCAN_COUNT), None).boxed()
        };
        let mut removed = 0u64;
        let mut purged = 0usize;
        let mut outcome = Ok(());
        while let Some(page) = pages.next().await {
            let mut page = match page {
                Ok(page) => page,
                Err(error) => {
                    outcome = Err(error.into());
                    break;
                }
            };
            let hashes = page.take_results().unwrap_or_default();
            let purges = hashes.into_iter().filter_map(|hash| {
                let name = hash.as_str()?;
                if !pattern.matches(&resource_of(name)?) {
                    return None;
                }
                Some(self.purge_hash(&call, Names::of_hash(hash.as_bytes()), false))
            });
            let purges: Vec<_> = purges.collect();
            purged += purges.len();
            for result in futures_util::future::join_all(purges).await {
                match result {
                    Ok(n) => removed += n,
                    Err(error) => outcome = Err(error),
                }
            }
            if outcome.is_err() {
                break;
            }
            page.next();
        }
        // Whatever was purged, even in part, ends every hint here and,
        // announced, in every other instance. A pattern that matched
        // nothing leaves them all.
        let announced = if purged > 0 {
            self.local.hints.purged_all();
            let client = call.client()?;
            call.result(
                client
                    .publish::<(), _, _>(EVENTS_CHANNEL, PATTERN_PURGED)
                    .await,
            )
        } else {
            Ok(())
        };
        outcome?;
        announced?;
        Ok(removed)
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
    fn shared_pieces_are_written_into_every_script() {
        let scripts = Scripts::new(1000);
        for script in scripts.all() {
            let text: &str = &script.source;
            for piece in ["CLOCK", "OURS", "READABLE", "TAKE", "EXTEND"] {
                assert!(
                    !text.lines().any(|line| line.trim() == piece),
                    "{piece} left in:\n{text}"
                );
            }
            for left in ["MAX_VALUE_BYTES", "INLINE_BYTES"] {
                assert!(!text.contains(left), "{left} left in:\n{text}");
            }
        }
        let lookup: &str = &scripts.lookup.source;
        assert!(lookup.contains("\nlocal now = tonumber(t[1]) * 1000"));
        assert!(lookup.contains("\nlocal size = redis.call('HSTRLEN', hash, field)\n"));
        assert!(lookup.contains("size > 1000") && lookup.contains("size <= 2048"));
        // A piece inside a piece: EXTEND inside TAKE.
        assert!(lookup.contains("\nif redis.call('PTTL', hash) < ttl then\n"));
        let get_many: &str = &scripts.get_many.source;
        assert!(get_many.contains("\n  local size = redis.call('HSTRLEN', hash, field)\n"));
        assert!(get_many.contains("\n    redis.call('DEL', times)\n"));
        let store: &str = &scripts.store.source;
        assert!(store.contains("\nif redis.call('PTTL', times) < ttl then\n"));
    }

    #[test]
    fn names_follow_the_key_layout() {
        let key = keys().named_key("user:1");
        let variant = key.variant().to_owned();
        let text = |k: &[u8]| String::from_utf8(k.to_vec()).unwrap();
        let entry = Names::entry(b"v:", &key);
        assert_eq!(text(entry.hash_name()), "tca:{user:1}");
        let both = entry.keys();
        assert_eq!(text(both[0].as_bytes()), "tca:{user:1}");
        assert_eq!(text(both[1].as_bytes()), "tca:{user:1}:t");
        assert_eq!(text(entry.hash().as_bytes()), "tca:{user:1}");
        assert_eq!(text(&entry.field()), format!("v:{variant}"));
        assert_eq!(entry.variant(), Value::Bytes(Bytes::from(variant.clone())));
        assert_eq!(
            entry.hint(),
            HintKey::new(b"tca:{user:1}", variant.as_bytes())
        );
        let lease = Names::entry(b"l:", &key);
        assert_eq!(text(&lease.field()), format!("l:{variant}"));
        assert_eq!(
            lease_announced(&lease),
            format!("tca:{{user:1}}:l:{variant}")
        );
        let resource = Names::resource(key.resource());
        assert_eq!(text(resource.hash_name()), "tca:{user:1}");
        assert_eq!(text(resource.keys()[1].as_bytes()), "tca:{user:1}:t");
        assert!(resource.field().is_empty());
        let scanned = Names::of_hash(b"tca:{user:1}");
        assert_eq!(text(scanned.keys()[0].as_bytes()), "tca:{user:1}");
        assert_eq!(text(scanned.keys()[1].as_bytes()), "tca:{user:1}:t");
    }

    #[test]
    fn long_names_spill_to_the_heap_whole() {
        let prefix = "p".repeat(200);
        let config = KeyConfig {
            prefix: Arc::from(prefix.as_str()),
            ..keys()
        };
        let key = config.named_key("user:1");
        let entry = Names::entry(b"v:", &key);
        let hash = format!("{prefix}{{user:1}}");
        assert_eq!(entry.hash_name(), hash.as_bytes());
        assert_eq!(
            &entry.field()[..],
            format!("v:{}", key.variant()).as_bytes()
        );
    }

    #[test]
    fn announcements_reach_hints_and_waiters() {
        let local = Local::default();
        let key = keys().named_key("user:1");
        let names = Names::entry(b"v:", &key);
        let hash = names.hash_name();
        let hint = HintKey::new(hash, key.variant().as_bytes());
        let fresh = |local: &Local| local.hints.is_fresh(&hint, local.hints.stamp(&hint));

        local
            .hints
            .set(&hint, local.hints.stamp(&hint), Duration::from_secs(60));
        local.heard(b"p:tca:{user:2}");
        local.heard(b"nonsense");
        local.heard(b"");
        assert!(
            fresh(&local) || (resource_hash(hash) % 4096 == resource_hash(b"tca:{user:2}") % 4096)
        );
        let mut message = b"p:".to_vec();
        message.extend_from_slice(hash);
        local.heard(&message);
        assert!(!fresh(&local));
        assert_eq!(*local.purges_heard.borrow(), 2);

        local
            .hints
            .set(&hint, local.hints.stamp(&hint), Duration::from_secs(60));
        local.heard(PATTERN_PURGED.as_bytes());
        assert!(!fresh(&local));
        assert_eq!(*local.purges_heard.borrow(), 3);
    }
}
