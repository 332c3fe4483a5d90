//! What the store keeps in this process beside Redis, fed by the
//! announcements every instance publishes on the events channel: the hints
//! of entries seen fresh, and the callers waiting on fills held elsewhere.
//!
//! The invariant kept: a purge announced anywhere ends this process's
//! hints of what it purged, and a fill that ends anywhere wakes the
//! callers here that wait on it. When announcements may have been lost (a
//! reconnection, a lagging subscriber), every hint ends and every waiter
//! wakes, so that nothing waits on or trusts what it may not have heard.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::ReconnectPolicy;

use crate::store::backend::FillEnd;
use crate::store::deadline::Deadlines;
use crate::store::hints::{resource_hash, Hints, DEFAULT_ENTRIES};
use crate::store::waiters::Waiters;

/// The channel every instance announces on: `f:<lease>` (a fill ended
/// with a write: look again), `r:<lease>` (released without a write),
/// `p:<hash>` (a resource was purged), `P` (a pattern purge). `<lease>` is
/// `<hash>:l:<variant>`.
pub(super) const EVENTS_CHANNEL: &str = "tower-cache-aside:events";

/// The message of a pattern purge.
pub(super) const PATTERN_PURGED: &str = "P";

/// What this process keeps beside Redis: the hints of entries seen fresh,
/// the callers waiting on fills held elsewhere, and the subscription to
/// the events channel that keeps both up to date.
#[derive(Debug)]
pub(super) struct Events {
    /// Entries seen fresh lately, read by a plain `HGET`; purges end them.
    pub(super) hints: Hints,
    /// The deadlines of hinted reads (see
    /// [`Call::watched_client`](super::call::Call::watched_client)).
    pub(super) deadlines: Deadlines,
    /// Callers waiting on a fill held elsewhere; its announcement wakes
    /// them.
    pub(super) waiters: Waiters,
    /// Whether the subscriber was started (by [`Events::start`], once).
    started: std::sync::atomic::AtomicBool,
    /// Whether the subscription is in place (announcements are heard).
    subscribed: tokio::sync::watch::Sender<bool>,
    /// Purge announcements heard so far.
    pub(super) purges_heard: tokio::sync::watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Events::with_hints(DEFAULT_ENTRIES)
    }
}

impl Events {
    /// Nothing heard yet, and room for `entries` hints (0: no hints).
    pub(super) fn with_hints(entries: usize) -> Events {
        Events {
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
    pub(super) async fn listen(self: &Arc<Self>, client: &Client, timeout: Duration) {
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
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut messages = subscriber.message_rx();
            let _connection = subscriber.connect();
            let _resubscribe = subscriber.manage_subscriptions();
            let mut delay = Duration::from_millis(100);
            while let Err(error) = subscriber.subscribe(EVENTS_CHANNEL).await {
                tracing::warn!(target: "tower_cache_aside", %error, "cannot subscribe to cache announcements yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                if weak.strong_count() == 0 {
                    return;
                }
            }
            if let Some(events) = weak.upgrade() {
                events.subscribed.send_replace(true);
            }
            // Made only now, so the first connection is not taken for a
            // reconnection.
            let mut reconnections = Some(subscriber.reconnect_rx());
            loop {
                let reconnected = async {
                    match reconnections.as_mut() {
                        Some(reconnects) => reconnects.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let message = tokio::select! {
                    message = messages.recv() => message,
                    reconnected = reconnected => {
                        // Announcements made while the connection was down
                        // (or past a lag) are lost: forget every hint, wake
                        // every waiter.
                        if let Some(events) = weak.upgrade() {
                            events.lost_announcements();
                        }
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = reconnected {
                            // No more reconnection events will come.
                            reconnections = None;
                        }
                        continue;
                    }
                };
                let Some(events) = weak.upgrade() else {
                    let _ = subscriber.quit().await;
                    return;
                };
                match message {
                    Ok(message) => {
                        if let Some(text) = message.value.as_bytes() {
                            events.heard(text);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        events.lost_announcements();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// After a hint was set: listen for purges, so that other instances'
    /// purges end it (not when hints are off: then only fill waits need
    /// the subscription, and they start it themselves).
    pub(super) fn hinted(self: &Arc<Self>, client: &Client) {
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

    /// After announcements may have been lost (a reconnection, a lagging
    /// subscriber): forgets every hint, wakes every waiter.
    fn lost_announcements(&self) {
        self.hints.purged_all();
        self.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::names::KeyNames;
    use super::*;
    use crate::key::{KeyConfig, QueryKey};
    use crate::store::hints::HintKey;

    fn keys() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("tca:"),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    #[test]
    fn announcements_reach_hints_and_waiters() {
        let events = Events::default();
        let key = keys().named_key("user:1");
        let names = KeyNames::entry(b"v:", &key);
        let hash = names.hash_name();
        let hint = HintKey::new(hash, key.variant().as_bytes());
        let fresh = |events: &Events| events.hints.is_fresh(&hint, events.hints.stamp(&hint));

        events
            .hints
            .set(&hint, events.hints.stamp(&hint), Duration::from_secs(60));
        events.heard(b"p:tca:{user:2}");
        events.heard(b"nonsense");
        events.heard(b"");
        assert!(
            fresh(&events) || (resource_hash(hash) % 4096 == resource_hash(b"tca:{user:2}") % 4096)
        );
        let mut message = b"p:".to_vec();
        message.extend_from_slice(hash);
        events.heard(&message);
        assert!(!fresh(&events));
        assert_eq!(*events.purges_heard.borrow(), 2);

        events
            .hints
            .set(&hint, events.hints.stamp(&hint), Duration::from_secs(60));
        events.heard(PATTERN_PURGED.as_bytes());
        assert!(!fresh(&events));
        assert_eq!(*events.purges_heard.borrow(), 3);
    }
}
