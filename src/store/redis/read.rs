//! The read path: how one entry is read, and how a lookup that finds its
//! lease held elsewhere comes to wait.
//!
//! The invariant kept: a read returns a value only when Redis held it
//! readable (unexpired, and within the store's size bound). The lookup
//! script checks both itself; the plain `HGET` of an entry hinted fresh
//! cannot check expiry, and relies on every purge removing a resource's
//! hash whole (so a purged entry reads as nothing) and on hints ending
//! before their entry does. A hinted read that finds nothing usable ends
//! the hint and asks the script.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::HashesInterface;
use fred::types::{ClusterHash, CustomCommand, Value};

use super::call::Call;
use super::events::Events;
use super::names::{bound_arg, lease_announced, lease_arg, KeyNames};
use super::scripts::Script;
use crate::key::EntryKey;
use crate::store::backend::{FillEnd, LeaseRequest, Lookup};
use crate::store::deadline::Elapsed;
use crate::Error;

/// What a read of one entry found.
pub(super) enum EntryRead {
    /// A readable value.
    Value(Bytes),
    /// Readable when checked, gone when read (purged in between).
    Gone,
    /// The lookup script's verdict: 0, 2, 3 or 4.
    Verdict(i64),
}

/// Waits on another holder's lease: registers, then checks that the
/// lease is still held (a fill that ended in between is not waited for).
pub(super) async fn busy(
    call: &Call<'_>,
    events: &Arc<Events>,
    key: &EntryKey,
    lease: &LeaseRequest,
) -> Result<Lookup, Error> {
    events.listen(call.client, call.within(lease.ttl)).await;
    let lease_names = KeyNames::entry(b"l:", key);
    let wait = events.waiters.register(&lease_announced(&lease_names));
    let (hash, field) = (lease_names.hash(), lease_names.field());
    let client = call.client()?;
    let held: i64 = match call.result(client.hexists(hash, field).await) {
        Ok(held) => held,
        Err(error) => {
            call.followed(error, || field_command("HEXISTS", &lease_names))
                .await?
        }
    };
    if held == 0 {
        return Ok(Lookup::Busy(Box::pin(async { FillEnd::Filled })));
    }
    Ok(Lookup::Busy(wait))
}

/// Reads an entry: with a plain `HGET` when it was seen fresh lately
/// (see [`Hints`](crate::store::hints::Hints)), else (or when that finds
/// nothing) with the `lookup` script, which takes the lease `lease` asks
/// for on a miss. A value over `max_value_bytes` is not used.
pub(super) async fn read(
    call: &Call<'_>,
    events: &Arc<Events>,
    lookup: &Script,
    max_value_bytes: u64,
    key: &EntryKey,
    lease: Option<&LeaseRequest>,
) -> Result<EntryRead, Error> {
    let hints = &events.hints;
    let names = KeyNames::entry(b"v:", key);
    let hint = names.hint();
    let stamp = hints.stamp(&hint);
    if hints.is_fresh(&hint, stamp) {
        // Boxed: fred's command futures are large (5 KB for an `HGET`)
        // and would make every caller's future (moved into a box of its
        // own on every call) as large.
        let (client, deadline) = call.watched_client(&events.deadlines)?;
        let hget = Box::pin(client.hget(names.hash(), names.field()));
        let read = match deadline {
            Some(at) => match events.deadlines.watch(hget, at).await {
                Ok(read) => call.result(read),
                Err(Elapsed) => Err(call.timeout()),
            },
            None => call.result(hget.await),
        };
        let read = match read {
            Err(error @ Error::Redis(_)) => {
                Box::pin(call.followed(error, || field_command("HGET", &names))).await
            }
            read => read,
        };
        match read {
            Ok(Some(value)) if within_bound(&value, max_value_bytes) => {
                return Ok(EntryRead::Value(value))
            }
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
    let reply: Value = lookup
        .run_on(call, &names, || {
            vec![
                names.variant(),
                lease.map_or_else(|| Value::Bytes(Bytes::new()), lease_arg),
                lease
                    .and_then(|lease| lease.max_entries)
                    .map_or_else(|| Value::Bytes(Bytes::new()), bound_arg),
            ]
        })
        .await?;
    match reply {
        // The variant's vary record: no hint (an `HGET` reads entries).
        Value::Array(mut parts) if parts.len() == 3 => match parts.swap_remove(1) {
            Value::Bytes(record) => Ok(EntryRead::Value(record)),
            Value::String(record) => Ok(EntryRead::Value(record.into_inner())),
            _ => Err(Error::Store("unexpected lookup script reply".into())),
        },
        Value::Array(mut parts) if !parts.is_empty() && parts.len() <= 2 => {
            let left = parts[0].as_i64().unwrap_or(0).max(0);
            let value = match parts.pop() {
                Some(Value::Bytes(value)) if parts.len() == 1 => value,
                Some(Value::String(value)) if parts.len() == 1 => value.into_inner(),
                // Readable but large: read it now.
                _ => match read_field(call, &names).await? {
                    Some(value) if within_bound(&value, max_value_bytes) => value,
                    _ => return Ok(EntryRead::Gone),
                },
            };
            hints.set(&hint, stamp, Duration::from_millis(left as u64));
            events.hinted(call.client);
            Ok(EntryRead::Value(value))
        }
        Value::Integer(verdict) => Ok(EntryRead::Verdict(verdict)),
        _ => Err(Error::Store("unexpected lookup script reply".into())),
    }
}

/// The entry's value by `HGET`, following a Cluster's redirections.
async fn read_field(call: &Call<'_>, names: &KeyNames) -> Result<Option<Bytes>, Error> {
    let client = call.client()?;
    match call.result(Box::pin(client.hget(names.hash(), names.field())).await) {
        Err(error) => Box::pin(call.followed(error, || field_command("HGET", names))).await,
        read => read,
    }
}

/// `name` (`HGET`, `HEXISTS`) on the field `names` name, routed by the
/// hash's slot: the command as sent again after a redirection.
fn field_command(name: &'static str, names: &KeyNames) -> (CustomCommand, Vec<Value>) {
    let slot = fred::util::redis_keyslot(names.hash_name());
    (
        CustomCommand::new_static(name, ClusterHash::Custom(slot), false),
        vec![
            Value::Bytes(Bytes::copy_from_slice(names.hash_name())),
            Value::Bytes(names.field()),
        ],
    )
}

/// Whether a value read by a plain `HGET`, which cannot check its size
/// first, is within `max_value_bytes`: one over the bound is not used.
fn within_bound(value: &Bytes, max_value_bytes: u64) -> bool {
    value.len() as u64 <= max_value_bytes
}
