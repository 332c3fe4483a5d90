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
use crate::key::DerivedKey;
use crate::lease::LeaseGuard;

/// Keeps what is needed to store a response once its body has ended.
pub(crate) struct Recorder {
    key: DerivedKey,
    /// Released if the recorder is dropped before the body ends.
    lease: LeaseGuard,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    /// How long the store keeps the entry: its TTL and the stale windows.
    keep: Duration,
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
        ttl: Duration,
        keep: Duration,
        max_body_bytes: usize,
    ) -> Recorder {
        Recorder {
            key,
            lease,
            status,
            headers,
            ttl,
            keep,
            max_body_bytes,
            chunks: Vec::new(),
            size: 0,
            trailers: None,
        }
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
        let stored_at_ms = crate::util::time::now_ms();
        let parts = EntryParts {
            status: self.status,
            headers: &self.headers,
            body: &self.chunks,
            trailers: self.trailers.as_ref(),
            stored_at_ms,
            ttl_ms: crate::util::time::millis(self.ttl),
            fingerprint: &self.key.fingerprint,
        };
        let Ok(value) = parts.encode() else {
            return;
        };
        let (mut lease, keep) = (self.lease, self.keep);
        runtime.spawn(async move {
            let result = lease.fill(value, keep).await;
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
