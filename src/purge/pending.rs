//! Purges that failed, kept until the store takes them: a bounded
//! in-process queue. While one covers a path, this instance does not serve
//! that path from the cache.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::rules::Purge;
use crate::key::ResourceKey;

/// Failed purges kept for retry, at most; past this, the oldest are dropped
/// (their entries then live at most until their TTL).
const MAX_PENDING: usize = 4096;

/// Purges that failed, kept until the store takes them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Each purge with the count of the failure that put it there: a retry
    /// removes a purge only if it did not fail again meanwhile.
    purges: Mutex<Vec<(Purge, u64)>>,
    failures: AtomicU64,
    /// Length of `purges`, readable without the lock on the hot path.
    len: AtomicUsize,
    retrying: AtomicBool,
}

impl Pending {
    /// Whether a failed purge still covers this resource; hits for it are
    /// not served meanwhile.
    pub(super) fn covers(&self, resource: &ResourceKey) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.purges
            .lock()
            .map(|purges| purges.iter().any(|(p, _)| p.covers(resource)))
            // A poisoned lock: be safe, do not serve from the cache.
            .unwrap_or(true)
    }

    pub(super) fn push(&self, failed: Vec<Purge>) {
        let Ok(mut purges) = self.purges.lock() else {
            return;
        };
        for purge in failed {
            let failure = self.failures.fetch_add(1, Ordering::Relaxed);
            match purges.iter_mut().find(|(p, _)| *p == purge) {
                Some(pending) => pending.1 = failure,
                None => purges.push((purge, failure)),
            }
        }
        if purges.len() > MAX_PENDING {
            let excess = purges.len() - MAX_PENDING;
            tracing::error!(target: "tower_cache_aside", dropped = excess, "too many failed purges; the oldest now expire by TTL only");
            purges.drain(..excess);
        }
        self.len.store(purges.len(), Ordering::Release);
    }

    /// A copy of the pending purges; they stay pending (and keep fencing)
    /// until [`Pending::done`] removes those that succeeded.
    pub(super) fn snapshot(&self) -> Vec<(Purge, u64)> {
        self.purges
            .lock()
            .map(|purges| purges.clone())
            .unwrap_or_default()
    }

    /// Removes purges that have now succeeded, unless they failed again
    /// since the snapshot was taken.
    pub(super) fn done(&self, succeeded: &[(Purge, u64)]) {
        let Ok(mut purges) = self.purges.lock() else {
            return;
        };
        purges.retain(|pending| !succeeded.contains(pending));
        self.len.store(purges.len(), Ordering::Release);
    }

    /// Whether no purge is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Marks the retry task as running: `true` when it was not, and the
    /// caller must start it.
    pub(super) fn start_retrying(&self) -> bool {
        !self.retrying.swap(true, Ordering::AcqRel)
    }

    /// Marks the retry task as ended.
    pub(super) fn stop_retrying(&self) {
        self.retrying.store(false, Ordering::Release);
    }
}
