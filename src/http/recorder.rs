//! The bounded copy a stored miss keeps of its body.
//!
//! On a miss that may be stored, the inner body streams to the client frame
//! by frame while a [`Recorder`] keeps a second reference to each data frame
//! (`Bytes` clones: no copy) and the trailers. Nothing delays a frame. The
//! recorder gives up, and frees what it holds, as soon as the body passes
//! the size cap or fails; so it never buffers more than the cap. When the
//! inner body ends, the recorder encodes the entry and hands the write, a
//! fill under the request's lease, to a background task. A body dropped
//! before its end (the client went away) drops its recorder, and nothing is
//! stored.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Frame;

use crate::entry::EntryParts;
use crate::key::{DerivedKey, EntryKey};
use crate::lease::LeaseGuard;
use crate::util::time::StaleWindows;

/// When a stored response was made and how long it is fresh and kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    /// When the origin made it (ms since the epoch): its arrival less its
    /// age then, so that a hit's `Age` counts both.
    pub(crate) born_ms: u64,
    /// Its freshness lifetime, from `born_ms`.
    pub(crate) ttl: Duration,
    /// How long it is kept past its freshness, to be served stale.
    pub(crate) grace: Duration,
    /// Its own stale windows, where they are not the layer's.
    pub(crate) stale: Option<StaleWindows>,
}

/// Keeps what is needed to store a response once its body has ended.
pub(crate) struct Recorder {
    /// Where the entry goes: the leased entry, or another variant of its
    /// resource (see [`crate::http::vary`]).
    key: DerivedKey,
    /// The resource's vary record (its base variant and the record),
    /// written with the entry.
    record: Option<(EntryKey, Bytes)>,
    /// The bound on the resource's fields, for a varied write.
    max_entries: Option<usize>,
    /// Released if the recorder is dropped before the body ends.
    lease: LeaseGuard,
    status: StatusCode,
    headers: HeaderMap,
    lifetime: Lifetime,
    max_body_bytes: usize,
    chunks: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
}

impl Recorder {
    pub(crate) fn new(
        key: DerivedKey,
        lease: LeaseGuard,
        status: StatusCode,
        headers: HeaderMap,
        lifetime: Lifetime,
        max_body_bytes: usize,
    ) -> Recorder {
        Recorder {
            key,
            record: None,
            max_entries: None,
            lease,
            status,
            headers,
            lifetime,
            max_body_bytes,
            chunks: Vec::new(),
            size: 0,
            trailers: None,
        }
    }

    /// Writes the resource's vary record with the entry, and bounds what
    /// a write under another variant than the leased one adds to the
    /// resource by `max_entries`.
    pub(crate) fn varied(
        mut self,
        record: Option<(EntryKey, Bytes)>,
        max_entries: usize,
    ) -> Recorder {
        self.record = record;
        self.max_entries = Some(max_entries);
        self
    }

    /// Keeps a frame; `false` when the body is now too large to store.
    pub(crate) fn record(&mut self, frame: &Frame<Bytes>) -> bool {
        if let Some(data) = frame.data_ref() {
            self.size = self.size.saturating_add(data.len());
            if self.size > self.max_body_bytes {
                tracing::debug!(
                    target: "tower_cache_aside",
                    limit = self.max_body_bytes,
                    "body over the size cap, not stored"
                );
                return false;
            }
            if !data.is_empty() {
                self.chunks.push(data.clone());
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
        }
        true
    }

    /// Encodes the entry and stores it in the background.
    pub(crate) fn finish(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The entry carries its exact length, so that a hit need not
        // compute it.
        let length: usize = self.chunks.iter().map(Bytes::len).sum();
        crate::entry::set_content_length(self.status, &mut self.headers, length);
        let Lifetime {
            born_ms,
            ttl,
            grace,
            stale,
        } = self.lifetime;
        let ttl_ms = crate::util::time::millis(ttl);
        // The store keeps it until the end of its last stale window, from
        // now: a body that took longer than that is not stored.
        let end_ms = born_ms
            .saturating_add(ttl_ms)
            .saturating_add(crate::util::time::millis(grace));
        let Some(keep_ms) = end_ms
            .checked_sub(crate::util::time::now_ms())
            .filter(|ms| *ms > 0)
        else {
            return;
        };
        let parts = EntryParts {
            status: self.status,
            headers: &self.headers,
            body: &self.chunks,
            trailers: self.trailers.as_ref(),
            stored_at_ms: born_ms,
            ttl_ms,
            stale,
            fingerprint: &self.key.fingerprint,
        };
        let Ok(value) = parts.encode() else {
            return;
        };
        let (mut lease, keep) = (self.lease, Duration::from_millis(keep_ms));
        let (entry, record, max) = (self.key.key, self.record, self.max_entries);
        runtime.spawn(async move {
            let result = if entry == *lease.key() && record.is_none() {
                lease.fill(value, keep).await
            } else {
                let record = record.as_ref().map(|(at, value)| (at, value.clone()));
                lease.fill_varied(&entry, value, keep, record, max).await
            };
            let resource = lease.key().resource().resource();
            match result {
                Ok(true) => {
                    tracing::trace!(target: "tower_cache_aside", resource, "stored");
                }
                Ok(false) => {
                    tracing::debug!(target: "tower_cache_aside", resource, "lease lost (purged or expired): the fill is dropped");
                }
                // Logged by the guarded store; the lease is released.
                Err(_) => {}
            }
        });
    }
}
