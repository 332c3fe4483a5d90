//! Purges: of one resource, by the purge script on its two keys, and of
//! every resource a pattern matches, found by `SCAN` (never `KEYS`).
//!
//! The invariants kept: a purge ends this process's hints of what it
//! removed before it returns, and is announced on the events channel so
//! that it ends every other instance's too (a pattern purge once, at the
//! end, for everything it removed, even when it failed part way). A
//! pattern purge holds one `SCAN` page of names at a time.

use fred::interfaces::{ClientLike, PubsubInterface};
use fred::types::config::Server;
use fred::types::scan::{ScanResult, Scanner};
use fred::types::{ClusterHash, CustomCommand, Value};
use futures_util::StreamExt;

use super::asking::{own_view, primaries, OwnView};
use super::call::{is_try_again, Call};
use super::events::{EVENTS_CHANNEL, PATTERN_PURGED};
use super::names::KeyNames;
use super::scripts::Script;
use crate::key::ResourcePattern;
use crate::store::hints::{resource_hash, Hints};
use crate::Error;

/// Keys asked for per `SCAN` call in a pattern purge; each page's
/// resources are purged before the next page is read, so memory stays
/// bounded.
const SCAN_COUNT: u32 = 1000;

/// Runs the purge script `purge` on one resource's hash; `announce`
/// publishes it to every instance and ends its `hints` here (a pattern
/// purge announces once, at the end). Returns how many unexpired entries
/// it removed.
pub(super) async fn purge_hash(
    call: &Call<'_>,
    purge: &Script,
    hints: &Hints,
    names: KeyNames,
    announce: bool,
) -> Result<u64, Error> {
    let args = || {
        vec![
            Value::from_static_str(EVENTS_CHANNEL),
            Value::from_static_str(if announce { "1" } else { "" }),
        ]
    };
    let removed: i64 = match purge.run_on(call, &names, args).await {
        Err(error) if is_try_again(&error) => {
            purge_keys_apart(call, purge, &names, announce).await?
        }
        removed => removed?,
    };
    if announce {
        hints.purged(resource_hash(names.hash_name()));
    }
    Ok(u64::try_from(removed).unwrap_or(0))
}

/// The purge of a resource whose slot is being migrated and whose two keys
/// are not on one node (`TRYAGAIN`, past [`Call::follow`]'s retries; or a
/// resource that is on neither, which a two-key command cannot be sure
/// of until the slot's migration ends): the purge script on the hash
/// alone, then on the expiry set alone (each given its key twice, which
/// Redis counts as one key: no `TRYAGAIN`), each where it lives now. The
/// hash goes first: with it go the entries and their leases, so no fill
/// begun before can be stored after. Returns what the expiry set counted.
async fn purge_keys_apart(
    call: &Call<'_>,
    purge: &Script,
    names: &KeyNames,
    announce: bool,
) -> Result<i64, Error> {
    let [hash, times] = names.keys();
    let channel = || Value::from_static_str(EVENTS_CHANNEL);
    let announced = if announce { "1" } else { "" };
    let _: i64 = purge
        .run(call, || {
            (
                vec![hash.clone(), hash.clone()],
                vec![channel(), Value::from_static_str(announced)],
            )
        })
        .await?;
    purge
        .run(call, || {
            (
                vec![times.clone(), times.clone()],
                vec![channel(), Value::from_static_str("")],
            )
        })
        .await
}

/// `SCAN MATCH <prefix>{<literal prefix>*}` on every primary (never
/// `KEYS`), then the purge script `purge` on each resource hash the
/// pattern matches, page by page; then one announcement for them all,
/// and the end of every hint here.
///
/// On a Cluster whose slots move meanwhile, a key can leave a slot's old
/// owner while its scan runs and land on a node scanned already: so the
/// slots are read before and after ([`layout`]), and every node that
/// imported a slot or gained slots in between, or that fred does not
/// scan (one it has no connection to), is scanned again, after the rest.
/// Keys only move to such nodes, so none is missed.
pub(super) async fn purge_matching(
    call: &Call<'_>,
    purge: &Script,
    hints: &Hints,
    pattern: &ResourcePattern,
) -> Result<u64, Error> {
    let client = call.client;
    // Candidates: every resource under the pattern's literal start;
    // `matches` then decides (it also reaches long, hashed paths).
    // A resource never holds `{` or `}`, so the glob's closing `}`
    // leaves out the `:t` sets.
    let glob = format!("{}{{{}*}}", pattern.prefix(), pattern.literal_prefix());
    let purging = Purging {
        call,
        purge,
        hints,
        pattern,
    };
    let mut tally = Tally::default();
    if client.is_clustered() {
        let before = layout(call).await?;
        let pages = client.scan_cluster(glob.clone(), Some(SCAN_COUNT), None);
        purging.pages(pages.boxed(), &mut tally).await;
        if tally.outcome.is_ok() {
            match layout(call).await {
                Ok(after) => {
                    for node in rescans(&before, &after, &client.active_connections()) {
                        match call.node_client(&node).await {
                            Ok(node) => {
                                let pages = node.scan(glob.clone(), Some(SCAN_COUNT), None);
                                purging.pages(pages.boxed(), &mut tally).await;
                            }
                            Err(error) => tally.outcome = Err(error),
                        }
                        if tally.outcome.is_err() {
                            break;
                        }
                    }
                }
                Err(error) => tally.outcome = Err(error),
            }
        }
    } else {
        let pages = client.scan(glob, Some(SCAN_COUNT), None);
        purging.pages(pages.boxed(), &mut tally).await;
    }
    // Whatever was purged, even in part, ends every hint here and,
    // announced, in every other instance. A pattern that matched
    // nothing leaves them all.
    let announced = if tally.purged > 0 {
        hints.purged_all();
        let client = call.client()?;
        call.result(
            client
                .publish::<(), _, _>(EVENTS_CHANNEL, PATTERN_PURGED)
                .await,
        )
    } else {
        Ok(())
    };
    tally.outcome?;
    announced?;
    Ok(tally.removed)
}

/// What a pattern purge needs to purge what its scans find.
struct Purging<'a, 'c> {
    call: &'a Call<'c>,
    purge: &'a Script,
    hints: &'a Hints,
    pattern: &'a ResourcePattern,
}

/// What a pattern purge has done so far.
struct Tally {
    /// Unexpired entries removed.
    removed: u64,
    /// Resources purged.
    purged: usize,
    /// The first failure, which ends the purge.
    outcome: Result<(), Error>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            removed: 0,
            purged: 0,
            outcome: Ok(()),
        }
    }
}

impl Purging<'_, '_> {
    /// The resource a hash's name names, if it is one of the prefix's.
    fn resource_of(&self, hash: &str) -> Option<String> {
        let inner = hash
            .strip_prefix(self.pattern.prefix())?
            .strip_prefix('{')?;
        Some(inner.strip_suffix('}')?.to_owned())
    }

    /// Purges each resource of `pages` the pattern matches, page by page,
    /// into `tally`, until the pages end or a purge fails.
    async fn pages(
        &self,
        mut pages: futures_util::stream::BoxStream<'_, Result<ScanResult, fred::error::Error>>,
        tally: &mut Tally,
    ) {
        while let Some(page) = pages.next().await {
            let mut page = match page {
                Ok(page) => page,
                Err(error) => {
                    tally.outcome = Err(error.into());
                    return;
                }
            };
            let hashes = page.take_results().unwrap_or_default();
            let purges = hashes.into_iter().filter_map(|hash| {
                let name = hash.as_str()?;
                if !self.pattern.matches(&self.resource_of(name)?) {
                    return None;
                }
                Some(purge_hash(
                    self.call,
                    self.purge,
                    self.hints,
                    KeyNames::of_hash(hash.as_bytes()),
                    false,
                ))
            });
            let purges: Vec<_> = purges.collect();
            tally.purged += purges.len();
            for result in futures_util::future::join_all(purges).await {
                match result {
                    Ok(n) => tally.removed += n,
                    Err(error) => tally.outcome = Err(error),
                }
            }
            if tally.outcome.is_err() {
                return;
            }
            page.next();
        }
    }
}

/// Every primary of the Cluster and what it says of its own slots
/// (`CLUSTER NODES` on each), in the order a node lists them.
async fn layout(call: &Call<'_>) -> Result<Vec<(Server, OwnView)>, Error> {
    let command = || CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
    let nodes = || vec![Value::from_static_str("NODES")];
    let listed: String = call.send_direct(command(), nodes()).await?;
    let mut layout = Vec::new();
    for node in primaries(&listed) {
        let own: String = call.send_to(&node, command(), nodes()).await?;
        let view = own_view(&own)
            .ok_or_else(|| Error::Store(format!("unreadable CLUSTER NODES from {node}").into()))?;
        layout.push((node, view));
    }
    Ok(layout)
}

/// The nodes a pattern purge scans again, by the slots `before` and
/// `after` its scan of the nodes in `scanned`: those importing a slot
/// before or after, those that gained slots, and those that own slots and
/// were not scanned.
fn rescans(
    before: &[(Server, OwnView)],
    after: &[(Server, OwnView)],
    scanned: &[Server],
) -> Vec<Server> {
    after
        .iter()
        .filter(|(node, view)| {
            let was = before.iter().find(|(n, _)| n == node).map(|(_, v)| v);
            view.importing
                || was.is_some_and(|was| was.importing || was.slots < view.slots)
                || (view.slots > 0 && (was.is_none() || !scanned.contains(node)))
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// Which connection the call's next command goes over: the `id`, `addr`
/// and `laddr` of `CLIENT INFO` (Redis 6.2 or later). Taken before a
/// replicated purge and after its `WAIT`: fred resends a command whose
/// connection closed on a new one, where a `WAIT` counts none of the old
/// connection's writes, so the two must match for the `WAIT` to speak for
/// the purge.
pub(super) async fn connection(call: &Call<'_>) -> Result<String, Error> {
    let client = call.client()?;
    let info = CustomCommand::new_static("CLIENT", None, false);
    let text: String = call.result(client.custom(info, vec!["INFO"]).await)?;
    Ok(text
        .split(' ')
        .filter(|field| {
            field.starts_with("id=") || field.starts_with("addr=") || field.starts_with("laddr=")
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// `WAIT replicas timeout` on the call's connection, after a purge made on
/// it over the connection `before` names (see [`connection`]): `Ok` once
/// `replicas` replicas hold every write the connection made, an error (the
/// purge then counts as failed, and is retried) when fewer do by `timeout`
/// or when the connection changed meanwhile.
pub(super) async fn replicated(
    call: &Call<'_>,
    replicas: u32,
    timeout: std::time::Duration,
    before: &str,
) -> Result<(), Error> {
    // The server answers within what the call has left, before any timer
    // of the client's fires.
    let timeout = call.within(timeout);
    let timeout_ms = i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let client = call.waiting_client(timeout)?;
    let wait = CustomCommand::new_static("WAIT", None, false);
    let acked: i64 = call.result(
        client
            .custom(
                wait,
                vec![Value::from(i64::from(replicas)), Value::from(timeout_ms)],
            )
            .await,
    )?;
    if acked < i64::from(replicas) {
        return Err(Error::NotReplicated(format!(
            "the purge reached {acked} of {replicas} replicas within {timeout:?}"
        )));
    }
    if connection(call).await? != before {
        return Err(Error::NotReplicated(
            "the connection changed during the purge: its WAIT proves nothing".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(slots: u32, importing: bool) -> OwnView {
        OwnView { slots, importing }
    }

    #[test]
    fn nodes_that_may_have_gained_keys_are_scanned_again() {
        let [a, b, c, d] = [1, 2, 3, 4].map(|port| Server::new("127.0.0.1", port));
        let scanned = [a.clone(), b.clone(), c.clone()];
        let still = [
            (a.clone(), view(10, false)),
            (b.clone(), view(10, false)),
            (c.clone(), view(10, false)),
        ];
        assert!(rescans(&still, &still, &scanned).is_empty());
        // b imports (before or after), c gained slots, d owns slots fred
        // did not scan; a lost slots (keys only leave it).
        let before = [
            (a.clone(), view(10, false)),
            (b.clone(), view(10, true)),
            (c.clone(), view(10, false)),
            (d.clone(), view(0, false)),
        ];
        let after = [
            (a.clone(), view(8, false)),
            (b.clone(), view(10, false)),
            (c.clone(), view(11, false)),
            (d.clone(), view(1, false)),
        ];
        assert_eq!(
            rescans(&before, &after, &scanned),
            [b.clone(), c.clone(), d.clone()]
        );
        let opened = [(a.clone(), view(10, false)), (b.clone(), view(10, true))];
        assert_eq!(rescans(&still, &opened, &scanned), [b]);
    }
}
