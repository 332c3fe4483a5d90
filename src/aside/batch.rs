//! The batch read of [`Cache::get_many_or_fetch`](crate::Cache::get_many_or_fetch):
//! one multi-key read, one fetch of the missing keys, one batch of fenced
//! writes.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::Codec;
use super::inner::Inner;
use crate::key::EntryKey;
use crate::lease::{Judged, LeaseGuard};

/// Returns the values of `keys` in their order (see
/// `Cache::get_many_or_fetch`).
pub(super) async fn get_many<C, K, T, F, Fut, E>(
    inner: &Inner,
    keys: &[K],
    ttl: Duration,
    fetch_many: F,
) -> Result<Vec<Option<T>>, E>
where
    C: Codec,
    K: AsRef<str>,
    T: Serialize + DeserializeOwned + Clone,
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<HashMap<String, T>, E>>,
{
    // Each key once, in first-seen order.
    let mut unique: Vec<&str> = Vec::new();
    for key in keys {
        if !unique.contains(&key.as_ref()) {
            unique.push(key.as_ref());
        }
    }
    let entries: Vec<EntryKey> = unique.iter().map(|k| inner.keys.named_key(k)).collect();
    let store = inner.store();
    let reachable = store.allow();
    let stored = if reachable {
        store
            .call(|store| store.get_many(&entries))
            .await
            .unwrap_or_else(|_| vec![None; entries.len()])
    } else {
        vec![None; entries.len()]
    };
    let mut found: HashMap<&str, Option<T>> = HashMap::new();
    let mut missing: Vec<usize> = Vec::new();
    for (i, value) in stored.into_iter().enumerate() {
        // A stale value is fetched again with the missing ones: a batch
        // has no caller to answer first and refresh after.
        match value.map(|bytes| inner.judge::<C, T>(unique[i], bytes)) {
            Some(Judged::Fresh(value)) => {
                found.insert(unique[i], value);
            }
            _ => missing.push(i),
        }
    }
    if !missing.is_empty() {
        // Leases for the missing keys, so that the writes are fenced.
        let request = inner.leases.request();
        let leases: Vec<Option<LeaseGuard>> = if reachable {
            futures_util::future::join_all(
                missing
                    .iter()
                    .map(|&i| inner.leases.take(&entries[i], &request)),
            )
            .await
        } else {
            missing.iter().map(|_| None).collect()
        };
        let asked: Vec<String> = missing.iter().map(|&i| unique[i].to_owned()).collect();
        let mut fetched = match fetch_many(asked).await {
            Ok(fetched) => fetched,
            Err(error) => {
                futures_util::future::join_all(
                    leases.into_iter().flatten().map(LeaseGuard::release),
                )
                .await;
                return Err(error);
            }
        };
        let mut writes = Vec::new();
        for (&i, lease) in missing.iter().zip(leases) {
            let value = fetched.remove(unique[i]);
            if let Some(mut lease) = lease {
                match inner.encode::<C, T>(unique[i], value.as_ref(), ttl) {
                    Some((bytes, keep)) => writes.push(async move {
                        let _ = lease.fill(bytes, keep).await;
                    }),
                    None => lease.release().await,
                }
            }
            found.insert(unique[i], value);
        }
        futures_util::future::join_all(writes).await;
    }
    Ok(keys
        .iter()
        .map(|key| found.get(key.as_ref()).cloned().flatten())
        .collect())
}
