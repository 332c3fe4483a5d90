//! Purges: what a successful write makes stale, the declared purge rules,
//! the [`Purger`] handle, and what happens when a purge fails.
//!
//! A request with an unsafe method (anything but GET, HEAD, OPTIONS and
//! TRACE) answered with 2xx or 3xx purges, before its response is returned:
//!
//! - its own path, every variant (RFC 9111 section 4.4);
//! - the paths of its response's `Location` and `Content-Location`, when
//!   they are on the request's authority;
//! - the targets of the purge rules that match its method and path, with
//!   the path parameters substituted;
//! - the paths its handler names in a [`PurgePaths`] response extension.
//!
//! Every path is purged as its resource: the decoded path, which every
//! spelling of it shares (`/users/%32` purges what `/users/2` stored).
//!
//! An exact path is purged as one resource (every variant), in O(variants);
//! a target with a `*` is a pattern, purged by `SCAN` in bounded batches.
//!
//! # When a purge fails
//!
//! The mutating response is still returned, unchanged (the write did
//! happen), with `Cache-Status: …; detail=purge-failed`. The failed targets
//! are kept in a bounded in-process queue and retried in the background with
//! back-off until the store takes them. Until then, this instance does not
//! serve the affected paths from the cache, so its own clients read their
//! writes. Other instances can serve such an entry at most until the retry
//! succeeds or the entry's TTL ends, whichever is first: a failed purge never
//! extends how long stale data can live beyond the TTL.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

use self::pending::Pending;
use crate::key::{KeyConfig, ResourceKey};
use crate::store::guarded::Guarded;
use crate::Error;

mod location;
mod named;
mod pending;
mod rules;

pub use self::named::PurgePaths;

pub(crate) use self::rules::{Purge, PurgeRules};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Deadline of a purge retried in the background. A pattern purge scans
/// the keyspace (about 1 µs a key), which can outlast `purge_timeout` in a
/// large one; in the background nobody waits on it, so it gets room to
/// finish.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a method is safe (RFC 9110 section 9.2.1): only unsafe methods
/// purge.
pub(crate) fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a response to an unsafe request purges: 2xx and 3xx do.
pub(crate) fn purges_on(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// What a set of purges did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PurgeReport {
    /// Entries removed.
    pub(crate) removed: u64,
    /// Whether any purge failed (it is queued for retry).
    pub(crate) failed: bool,
}

/// Runs purges: the owner of the purge rules and of the queue of failed
/// purges, shared by a layer's services, its [`Purger`]s and the retry
/// task.
#[derive(Debug)]
pub(crate) struct Purges {
    store: Arc<Guarded>,
    keys: KeyConfig,
    rules: PurgeRules,
    /// Deadline of each purge a caller waits for.
    timeout: Duration,
    pending: Pending,
}

impl Purges {
    pub(crate) fn new(
        store: Arc<Guarded>,
        keys: KeyConfig,
        rules: PurgeRules,
        timeout: Duration,
    ) -> Purges {
        Purges {
            store,
            keys,
            rules,
            timeout,
            pending: Pending::default(),
        }
    }

    /// What a successful unsafe `method` request to `path` purges: the path
    /// itself and the matching rules' targets, each once.
    pub(crate) fn for_write(&self, method: &Method, path: &str) -> Vec<Purge> {
        let mut purges = vec![Purge::Resource(self.keys.resource_key(path))];
        for purge in self.rules.targets(&self.keys, method, path) {
            push_new(&mut purges, purge);
        }
        purges
    }

    /// Adds to `purges` the paths of the response's `Location` and
    /// `Content-Location` on the request's `authority`, resolved against
    /// the request's `path`.
    pub(crate) fn add_locations(
        &self,
        purges: &mut Vec<Purge>,
        headers: &HeaderMap,
        authority: &str,
        path: &str,
    ) {
        self.add_paths(purges, location::location_paths(headers, authority, path));
    }

    /// Adds to `purges` the paths the write's handler named in a
    /// [`PurgePaths`] extension.
    pub(crate) fn add_named(&self, purges: &mut Vec<Purge>, named: &PurgePaths) {
        self.add_paths(purges, named.paths());
    }

    /// Adds each path's resource to `purges`, once.
    fn add_paths(&self, purges: &mut Vec<Purge>, paths: impl IntoIterator<Item = impl AsRef<str>>) {
        for path in paths {
            push_new(
                purges,
                Purge::Resource(self.keys.resource_key(path.as_ref())),
            );
        }
    }

    /// Whether a failed purge awaiting its retry covers `resource`: the
    /// store may still hold what the write made stale, so it is not read.
    pub(crate) fn pending_covers(&self, resource: &ResourceKey) -> bool {
        self.pending.covers(resource)
    }

    /// Runs `purges` concurrently, each under the purge deadline; those
    /// that fail are queued and retried in the background.
    pub(crate) async fn purge(self: &Arc<Self>, purges: Vec<Purge>) -> PurgeReport {
        let (removed, failed) = self.run(purges, self.timeout).await;
        let report = PurgeReport {
            removed,
            failed: !failed.is_empty(),
        };
        self.retry_later(failed);
        report
    }

    /// Runs one purge under the purge deadline: how many entries it
    /// removed, or the store's error (the purge is then queued and retried
    /// in the background).
    pub(crate) async fn purge_one(self: &Arc<Self>, purge: Purge) -> Result<u64, Error> {
        let result = self.call(&purge, self.timeout).await;
        if result.is_err() {
            self.retry_later(vec![purge]);
        }
        result
    }

    /// Runs one purge under `timeout`; fails at once while the breaker is
    /// open.
    async fn call(&self, purge: &Purge, timeout: Duration) -> Result<u64, Error> {
        self.store
            .call_within(timeout, |store| match purge {
                Purge::Resource(r) => store.purge_resource(r),
                Purge::Pattern(p) => store.purge_pattern(p),
            })
            .await
    }

    /// Runs `purges` concurrently under `timeout`: entries removed, and
    /// the purges that failed.
    async fn run(&self, purges: Vec<Purge>, timeout: Duration) -> (u64, Vec<Purge>) {
        let calls = purges.into_iter().map(|purge| async move {
            let result = self.call(&purge, timeout).await;
            (purge, result)
        });
        let (mut removed, mut failed) = (0, Vec::new());
        for (purge, result) in futures_util::future::join_all(calls).await {
            match result {
                Ok(count) => removed += count,
                Err(error) => {
                    tracing::debug!(target: "tower_cache_aside", %error, ?purge, "purge failed; queued for retry");
                    failed.push(purge);
                }
            }
        }
        (removed, failed)
    }

    /// Queues failed purges and makes sure a retry task runs.
    fn retry_later(self: &Arc<Self>, failed: Vec<Purge>) {
        if failed.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Nothing could retry it: fencing the paths would fence them
            // for good, so the entries are left to their TTL.
            tracing::error!(target: "tower_cache_aside", "a purge failed outside a Tokio runtime; its entries expire by TTL only");
            return;
        };
        self.pending.push(failed);
        if self.pending.start_retrying() {
            // The task holds a weak reference: it ends with the layer.
            runtime.spawn(retry(Arc::downgrade(self)));
        }
    }
}

/// Retries the pending purges with back-off until none is left, or the
/// layer is gone.
async fn retry(purges: Weak<Purges>) {
    let mut delay = RETRY_MIN;
    loop {
        tokio::time::sleep(delay).await;
        let Some(purges) = purges.upgrade() else {
            return;
        };
        // The purges stay pending (fencing their paths) while they run.
        let snapshot = purges.pending.snapshot();
        let list = snapshot.iter().map(|(p, _)| p.clone()).collect();
        let timeout = purges.timeout.max(RETRY_TIMEOUT);
        let (removed, failed) = purges.run(list, timeout).await;
        let succeeded: Vec<(Purge, u64)> = snapshot
            .into_iter()
            .filter(|(p, _)| !failed.contains(p))
            .collect();
        purges.pending.done(&succeeded);
        if failed.is_empty() {
            tracing::info!(target: "tower_cache_aside", removed, "failed purges retried");
            purges.pending.stop_retrying();
            // A purge may have failed meanwhile: look once more.
            if purges.pending.is_empty() || !purges.pending.start_retrying() {
                return;
            }
            delay = RETRY_MIN;
        } else {
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}

fn push_new(purges: &mut Vec<Purge>, purge: Purge) {
    if !purges.contains(&purge) {
        purges.push(purge);
    }
}

/// A handle to purge cached responses from outside a request: jobs,
/// handlers, admin endpoints. Cheap to clone.
///
/// ```
/// # async fn run() -> Result<(), tower_cache_aside::Error> {
/// use http::Method;
/// use tower_cache_aside::{CacheAsideLayer, MemoryStore};
///
/// let layer = CacheAsideLayer::builder(MemoryStore::new())
///     .purge_on(Method::PUT, "/users/{id}", ["/users/{id}", "/users"])
///     .build()?;
/// let purger = layer.purger();
///
/// purger.purge_path("/users/7").await?;               // one resource, every variant
/// purger.purge_glob("/users/*").await?;               // a pattern
/// purger.purge_for(&Method::PUT, "/users/7").await?;  // what a PUT would purge
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Purger {
    purges: Arc<Purges>,
}

impl Purger {
    pub(crate) fn new(purges: Arc<Purges>) -> Purger {
        Purger { purges }
    }

    /// Purges every cached variant (host, query, headers) of `path`, as it
    /// appears in request targets (percent-encoded). Returns how many
    /// entries were removed.
    pub async fn purge_path(&self, path: &str) -> Result<u64, Error> {
        let resource = self.purges.keys.resource_key(path);
        self.purges.purge_one(Purge::Resource(resource)).await
    }

    /// Purges every path that matches `glob`, where `*` matches any run of
    /// characters (`/` included) and the text between is a path's text,
    /// decoded as request paths are (so `%2A` is a literal `*`, and the
    /// glob meets every spelling).
    pub async fn purge_glob(&self, glob: &str) -> Result<u64, Error> {
        let pieces: Vec<&str> = glob.split('*').collect();
        let mut parts = Vec::with_capacity(pieces.len() * 2);
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                parts.push(None);
            }
            parts.push(Some(*piece));
        }
        let pattern = self.purges.keys.path_pattern(parts);
        self.purges.purge_one(Purge::Pattern(pattern)).await
    }

    /// Purges what a successful `method` request to `path` would: the path
    /// itself and the targets of the matching purge rules.
    pub async fn purge_for(&self, method: &Method, path: &str) -> Result<u64, Error> {
        let report = self.purges.purge(self.purges.for_write(method, path)).await;
        if report.failed {
            return Err(Error::PurgeFailed);
        }
        Ok(report.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsafe_methods_with_success_or_redirect_purge() {
        assert!(is_safe_method(&Method::GET) && is_safe_method(&Method::OPTIONS));
        assert!(
            !is_safe_method(&Method::POST)
                && !is_safe_method(&Method::from_bytes(b"PURGE").unwrap())
        );
        assert!(purges_on(StatusCode::NO_CONTENT) && purges_on(StatusCode::SEE_OTHER));
        assert!(!purges_on(StatusCode::NOT_FOUND) && !purges_on(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
