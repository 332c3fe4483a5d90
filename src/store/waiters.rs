//! Callers waiting for a fill that someone else holds, keyed by lease.
//!
//! Shared by both stores: the memory store wakes waiters itself when a
//! lease is filled or released; the Redis store wakes them from the fill
//! announcements every instance publishes.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::backend::{FillEnd, FillWait};

#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<FillEnd>>>>,
}

impl Waiters {
    /// A future that resolves when the fill of `lease` ends. It never
    /// resolves if that is never announced; the caller bounds the wait.
    pub(crate) fn register(&self, lease: &str) -> FillWait {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut map) = self.map.lock() {
            let list = map.entry(lease.to_owned()).or_default();
            // Callers that gave up left closed senders behind.
            list.retain(|s| !s.is_closed());
            list.push(tx);
        }
        Box::pin(async move {
            match rx.await {
                Ok(end) => end,
                Err(_) => std::future::pending().await,
            }
        })
    }

    /// Wakes everyone waiting on `lease`.
    pub(crate) fn wake(&self, lease: &str, end: FillEnd) {
        let senders = self
            .map
            .lock()
            .ok()
            .and_then(|mut map| map.remove(lease))
            .unwrap_or_default();
        for sender in senders {
            let _ = sender.send(end);
        }
    }

    /// Wakes every waiter (announcements may have been lost): they look
    /// again.
    pub(crate) fn wake_all(&self) {
        let all = self
            .map
            .lock()
            .map(|mut map| std::mem::take(&mut *map))
            .unwrap_or_default();
        for sender in all.into_values().flatten() {
            let _ = sender.send(FillEnd::Filled);
        }
    }
}
