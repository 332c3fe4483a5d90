//! The Lua scripts of the Redis store, and how they are sent.
//!
//! A script is written once here, from shared pieces ([`CLOCK`], [`OURS`],
//! [`READABLE`], [`TAKE`], [`EXTEND`]) that [`expand`] writes into it at
//! the lines naming them, so that every script reads an entry, checks its
//! expiry and takes a lease by the same rules. The invariants kept:
//!
//! - every script that reads a value first makes sure `hash` and `times`
//!   are ours ([`OURS`]), checks the entry's expiry on Redis's clock
//!   ([`CLOCK`]) and bounds its size ([`READABLE`]), so no expired,
//!   oversized or foreign value is ever returned;
//! - a script is sent by its hash, and in full only when the server does
//!   not know it ([`Script::run`]).

use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::{ClusterHash, CustomCommand, Key, Value};

use super::call::{Call, Follow, Route};
use super::names::KeyNames;
use crate::Error;

/// Looks an entry up, and on a miss takes its fill lease, in one round
/// trip.
///
/// A small value (at most `INLINE_BYTES`) is returned by the script
/// itself. A larger one is not: Lua copies every string it touches, which
/// made a 16 KiB hit cost Redis four times a `GET`. The script then only
/// says the entry is readable, and the value is read by a plain `HGET`.
///
/// KEYS: hash, times. ARGV: the variant, the lease as the token (32
/// bytes) followed by its ttl in ms ('' = no lease, only look), and the
/// most fields (entries, leases, vary records) the resource may hold (''
/// = no bound). Returns `{ms left, value}` (readable, inline), `{ms
/// left}` (readable, not inline), `{ms left, record, 1}` (no entry, and
/// the variant holds a vary record `m:<variant>`: no lease taken), or 0
/// (not readable, no lease asked), 2 (lease taken), 3
/// (lease held elsewhere), 4 (the server refuses writes, e.g. a full
/// `maxmemory`: no lease), 5 (a new variant, and the resource is full: no
/// lease).
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
local record = 'm:' .. ARGV[1]
local until_ms = redis.call('ZSCORE', times, record)
if until_ms and tonumber(until_ms) > now then
  local length = redis.call('HSTRLEN', hash, record)
  if length > 0 and length <= RECORD_BYTES then
    return {tonumber(until_ms) - now, redis.call('HGET', hash, record), 1}
  end
end
if ARGV[2] == '' then
  return 0
end
BOUND
TAKE
"#;

/// Refuses to start a new variant of a full resource (written where a
/// line says `BOUND`, after `hash`, `times`, `field`, `now` and `OURS`):
/// when neither the entry nor its lease is there and the hash holds
/// `ARGV[3]` fields or more, up to 64 expired ones are dropped, and if
/// that leaves no room the script returns 5. A variant already there (a
/// stale entry, a dead lease) is refilled in place, which adds nothing.
const BOUND: &str = r#"if ARGV[3] ~= '' and redis.call('HLEN', hash) >= tonumber(ARGV[3])
  and redis.call('HEXISTS', hash, field) == 0
  and redis.call('HEXISTS', hash, 'l:' .. ARGV[1]) == 0 then
  local old = redis.call('ZRANGEBYSCORE', times, '-inf', now, 'LIMIT', 0, 64)
  if #old > 0 then
    redis.call('HDEL', hash, unpack(old))
    redis.call('ZREM', times, unpack(old))
  end
  if redis.call('HLEN', hash) >= tonumber(ARGV[3]) then
    return 5
  end
end"#;

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

/// Writes an entry. With a token, only while that token holds the lease
/// of the entry or of `ARGV[6]` unexpired (else nothing is written and 0
/// returned); the lease is then dropped and the fill announced. Writing
/// an entry removes its variant's vary record; with `ARGV[7]`, the
/// resource's vary record `ARGV[8]` is written under that (base) variant,
/// kept at least as long as the entry, and the base's own entry removed.
/// With `ARGV[9]`, the fields it would add (a new variant, a new record,
/// less the base entry it removes) must fit that bound on the hash's
/// fields, after up to 64 expired ones are dropped: else nothing is
/// written, the lease is released and 0 returned. Drops up to 64 expired
/// fields of the resource on the way. KEYS: hash, times. ARGV: variant,
/// value, ttl in ms, token ('' = unfenced), channel, the leased variant
/// ('' = the entry's), the base variant ('' = no record), the record, the
/// bound ('' = none).
const STORE_SCRIPT: &str = r#"
local hash, times = KEYS[1], KEYS[2]
CLOCK
OURS
local leased = ARGV[1]
if ARGV[6] ~= '' then
  leased = ARGV[6]
end
local lease = 'l:' .. leased
if ARGV[4] ~= '' then
  local expiry = redis.call('ZSCORE', times, lease)
  if redis.call('HGET', hash, lease) ~= ARGV[4] or not expiry or tonumber(expiry) <= now then
    redis.call('PUBLISH', ARGV[5], 'f:' .. hash .. ':' .. lease)
    return 0
  end
  redis.call('HDEL', hash, lease)
  redis.call('ZREM', times, lease)
end
if ARGV[9] ~= '' then
  local adding = 1 - redis.call('HEXISTS', hash, 'v:' .. ARGV[1])
  if ARGV[7] ~= '' and ARGV[7] ~= ARGV[1] then
    adding = adding + 1 - redis.call('HEXISTS', hash, 'm:' .. ARGV[7])
      - redis.call('HEXISTS', hash, 'v:' .. ARGV[7])
  end
  if adding > 0 and redis.call('HLEN', hash) + adding > tonumber(ARGV[9]) then
    local old = redis.call('ZRANGEBYSCORE', times, '-inf', now, 'LIMIT', 0, 64)
    if #old > 0 then
      redis.call('HDEL', hash, unpack(old))
      redis.call('ZREM', times, unpack(old))
    end
    if redis.call('HLEN', hash) + adding > tonumber(ARGV[9]) then
      if ARGV[4] ~= '' then
        redis.call('PUBLISH', ARGV[5], 'r:' .. hash .. ':' .. lease)
      end
      return 0
    end
  end
end
local field, ttl = 'v:' .. ARGV[1], tonumber(ARGV[3])
redis.call('HSET', hash, field, ARGV[2])
redis.call('ZADD', times, now + ttl, field)
local own = 'm:' .. ARGV[1]
redis.call('HDEL', hash, own)
redis.call('ZREM', times, own)
if ARGV[7] ~= '' and ARGV[7] ~= ARGV[1] then
  local record, plain = 'm:' .. ARGV[7], 'v:' .. ARGV[7]
  redis.call('HSET', hash, record, ARGV[8])
  local until_ms = redis.call('ZSCORE', times, record)
  if not until_ms or tonumber(until_ms) < now + ttl then
    redis.call('ZADD', times, now + ttl, record)
  end
  redis.call('HDEL', hash, plain)
  redis.call('ZREM', times, plain)
end
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
/// and announces it, if there was anything, unless `ARGV[2]` is ''. KEYS:
/// hash, times. ARGV: channel, announce. Returns how many unexpired
/// entries (not leases) there were, by their expiries.
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

/// The largest vary record a lookup returns (one of 8 names of 255 bytes
/// takes 2,053); a larger value under a record's name is not ours and is
/// not read.
const RECORD_BYTES: u64 = 4096;

/// A Lua script sent by hash, and in full when the server does not know it
/// yet (after a restart or on a new Cluster node).
#[derive(Debug, Clone)]
pub(super) struct Script {
    /// The Lua text, its pieces written in.
    source: Str,
    /// The SHA-1 of `source`, as `EVALSHA` takes it.
    sha1: Str,
}

/// A script's keys and arguments.
type Command = (Vec<Key>, Vec<Value>);

impl Script {
    /// A script of the Lua text `source` (pieces already written in).
    fn new(source: String) -> Script {
        Script {
            sha1: Str::from(fred::util::sha1_hash(&source)),
            source: Str::from(source),
        }
    }

    /// Runs the script on a resource's two keys (its hash, then its expiry
    /// set) and what `args` makes.
    pub(super) async fn run_on<R: fred::types::FromValue + 'static>(
        &self,
        call: &Call<'_>,
        names: &KeyNames,
        args: impl Fn() -> Vec<Value>,
    ) -> Result<R, Error> {
        self.run(call, || (names.keys().into(), args())).await
    }

    /// Runs the script on what `command` makes, which is called again only
    /// to send it again (in full after `NOSCRIPT`, or after a Cluster's
    /// redirection: see [`Call::follow`]), so that the common case builds
    /// its keys once and moves them into the command.
    pub(super) async fn run<R: fred::types::FromValue + 'static>(
        &self,
        call: &Call<'_>,
        command: impl Fn() -> Command,
    ) -> Result<R, Error> {
        let (keys, args) = command();
        // The slot routes the command, and tells `follow` where it goes.
        let slot = keys
            .first()
            .map(|key| fred::util::redis_keyslot(key.as_bytes()));
        let mut follow = Follow::new(slot);
        let mut in_full = false;
        let mut next = Some((keys, args));
        loop {
            let (keys, args) = next.take().unwrap_or_else(&command);
            let (name, script) = if in_full {
                ("EVAL", &self.source)
            } else {
                ("EVALSHA", &self.sha1)
            };
            let sent = self.send::<R>(name, script, call, &follow.route, slot, keys, args);
            match Box::pin(sent).await {
                Err(Error::Redis(error)) if !in_full && error.details().starts_with("NOSCRIPT") => {
                    in_full = true;
                }
                Err(error) if Box::pin(call.follow(&error, &mut follow)).await => {}
                result => return result,
            }
        }
    }

    /// `EVALSHA` or `EVAL` as a custom command: fred's `LuaInterface` is
    /// not implemented for a client with options, so its methods would
    /// drop the call's timeout. Routed by `slot`, the first key's.
    #[allow(clippy::too_many_arguments)]
    async fn send<R: fred::types::FromValue + 'static>(
        &self,
        command: &'static str,
        script: &Str,
        call: &Call<'_>,
        route: &Route,
        slot: Option<u16>,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<R, Error> {
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
        call.send(route, command, values).await
    }
}

/// Every script of the store, made for one bound on the values read.
#[derive(Debug)]
pub(super) struct Scripts {
    /// [`LOOKUP_SCRIPT`]: a read, and the lease on a miss.
    pub(super) lookup: Script,
    /// [`GET_MANY_SCRIPT`]: reads of one slot's entries.
    pub(super) get_many: Script,
    /// [`LEASE_SCRIPT`]: a lease, entry or not.
    pub(super) lease: Script,
    /// [`STORE_SCRIPT`]: a write, fenced by a lease or not.
    pub(super) store: Script,
    /// [`RELEASE_SCRIPT`]: a lease dropped unfilled.
    pub(super) release: Script,
    /// [`PURGE_SCRIPT`]: a resource removed whole.
    pub(super) purge: Script,
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
    pub(super) fn new(max_value_bytes: u64) -> Scripts {
        let make = |source: &str| {
            Script::new(
                expand(source)
                    .replace("MAX_VALUE_BYTES", &max_value_bytes.to_string())
                    .replace("INLINE_BYTES", &INLINE_BYTES.to_string())
                    .replace("RECORD_BYTES", &RECORD_BYTES.to_string()),
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

    /// Loads every script into the server of `client` (every primary of a
    /// cluster) by `SCRIPT LOAD`. Best effort: a script the server does not
    /// know when it is called is sent in full then.
    pub(super) async fn load(&self, client: &Client) {
        for script in self.all() {
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
}

/// Writes the shared pieces ([`CLOCK`], [`OURS`], [`READABLE`], [`TAKE`],
/// [`BOUND`], [`EXTEND`]) into a script, at the lines that name them (pieces may name
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
            "BOUND" => BOUND,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pieces_are_written_into_every_script() {
        let scripts = Scripts::new(1000);
        for script in scripts.all() {
            let text: &str = &script.source;
            for piece in ["CLOCK", "OURS", "READABLE", "TAKE", "BOUND", "EXTEND"] {
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
}
