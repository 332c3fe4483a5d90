//! The response body: a stored body on hits, the inner body on misses.
//!
//! On a miss that may be stored, the inner body streams to the client frame
//! by frame while a [`Recorder`] keeps a second reference to each data frame
//! (`Bytes` clones: no copy) and the trailers. Nothing delays a frame. The
//! recorder gives up, and frees what it holds, as soon as the body passes
//! the size cap or fails; so it never buffers more than the cap. When the
//! inner body ends, the recorder encodes the entry and hands the write to a
//! background task. A body dropped before its end (the client went away)
//! drops its recorder, and nothing is stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::entry::EntryParts;
use crate::key::DerivedKey;
use crate::layer::Config;
use crate::lease::LeaseGuard;

pin_project! {
    /// The body of a response that went through [`CacheAside`](crate::CacheAside).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Cached {
            data: Option<Bytes>,
            // Boxed for the same reason as the recorder: rare, and large.
            trailers: Option<Box<HeaderMap>>,
        },
        Inner {
            #[pin]
            inner: B,
            // Boxed: a recorder is large (the key, the lease, the headers)
            // and exists on stored misses only, while every response,
            // hits included, is moved several times on its way out.
            recorder: Option<Box<Recorder>>,
        },
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Cached { .. } => "cached",
            Kind::Inner {
                recorder: Some(_), ..
            } => "inner, recording",
            Kind::Inner { .. } => "inner",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B> ResponseBody<B> {
    /// A body served from the store. `body` is empty for HEAD.
    pub(crate) fn cached(body: Bytes, trailers: Option<HeaderMap>) -> Self {
        ResponseBody {
            kind: Kind::Cached {
                data: (!body.is_empty()).then_some(body),
                trailers: trailers.map(Box::new),
            },
        }
    }

    /// The inner service's body, passed through.
    pub(crate) fn passthrough(inner: B) -> Self {
        ResponseBody {
            kind: Kind::Inner {
                inner,
                recorder: None,
            },
        }
    }

    /// The inner service's body, recorded for storage when `recorder` is
    /// given.
    pub(crate) fn recorded(inner: B, mut recorder: Option<Recorder>) -> Self
    where
        B: Body,
    {
        // A body that is empty from the start may never be polled (hyper
        // checks `is_end_stream` first), so it is complete already.
        if inner.is_end_stream() {
            if let Some(rec) = recorder.take() {
                rec.finish();
            }
        }
        ResponseBody {
            kind: Kind::Inner {
                inner,
                recorder: recorder.map(Box::new),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Cached { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            KindProj::Inner {
                mut inner,
                recorder,
            } => {
                let frame = ready!(inner.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let Some(rec) = recorder.as_mut() {
                            if !rec.record(frame) {
                                *recorder = None;
                            }
                        }
                        // hyper stops polling once a body says it has ended,
                        // so the end must be seen here, not only at `None`.
                        if inner.is_end_stream() {
                            if let Some(rec) = recorder.take() {
                                (*rec).finish();
                            }
                        }
                    }
                    Some(Err(_)) => *recorder = None,
                    None => {
                        if let Some(rec) = recorder.take() {
                            (*rec).finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { inner, .. } => inner.size_hint(),
        }
    }
}

/// Keeps what is needed to store a response once its body has ended.
pub(crate) struct Recorder {
    config: Arc<Config>,
    key: DerivedKey,
    /// Released if the recorder is dropped before the body ends.
    lease: LeaseGuard,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    chunks: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
}

impl Recorder {
    pub(crate) fn new(
        config: Arc<Config>,
        key: DerivedKey,
        lease: LeaseGuard,
        status: StatusCode,
        headers: HeaderMap,
        ttl: Duration,
    ) -> Recorder {
        Recorder {
            config,
            key,
            lease,
            status,
            headers,
            ttl,
            chunks: Vec::new(),
            size: 0,
            trailers: None,
        }
    }

    /// Keeps a frame; `false` when the body is now too large to store.
    fn record(&mut self, frame: &Frame<Bytes>) -> bool {
        if let Some(data) = frame.data_ref() {
            self.size = self.size.saturating_add(data.len());
            if self.size > self.config.policy.max_body_bytes {
                tracing::debug!(
                    target: "tower_cache_aside",
                    limit = self.config.policy.max_body_bytes,
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
    fn finish(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The entry carries its exact length, so that a hit need not
        // compute it.
        let length: usize = self.chunks.iter().map(Bytes::len).sum();
        crate::entry::set_content_length(self.status, &mut self.headers, length);
        let stored_at_ms = crate::service::now_ms();
        let parts = EntryParts {
            status: self.status,
            headers: &self.headers,
            body: &self.chunks,
            trailers: self.trailers.as_ref(),
            stored_at_ms,
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            fingerprint: &self.key.fingerprint,
        };
        let Ok(value) = parts.encode() else {
            return;
        };
        let Some(token) = self.lease.take_token() else {
            return;
        };
        // Kept past its freshness for as long as it may be served stale.
        let keep = self.ttl + self.config.grace();
        let (config, key) = (self.config, self.key.key);
        runtime.spawn(async move {
            let write = config.store_call(|store| {
                if config.fencing {
                    store.fill(&key, value, keep, &token)
                } else {
                    // Test-only: an unfenced write, to show what fencing prevents.
                    Box::pin(async {
                        store.put(&key, value, keep).await?;
                        store.release(&key, &token).await?;
                        Ok(true)
                    })
                }
            });
            match write.await {
                Ok(true) => {
                    tracing::trace!(target: "tower_cache_aside", resource = key.resource().resource(), "stored");
                }
                Ok(false) => {
                    tracing::debug!(target: "tower_cache_aside", resource = key.resource().resource(), "lease lost (purged or expired): the fill is dropped");
                }
                Err(_) => {
                    let _ = config.store_call(|store| store.release(&key, &token)).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_body_stays_small_whatever_a_miss_records() {
        // Every response, hits included, is moved several times on its way
        // out (and boxed by axum): what only a stored miss needs is boxed.
        type Inner = http_body_util::Full<Bytes>;
        let size = std::mem::size_of::<ResponseBody<Inner>>();
        assert!(
            size <= std::mem::size_of::<Inner>() + 3 * std::mem::size_of::<usize>(),
            "ResponseBody is {size} bytes"
        );
        assert!(
            std::mem::size_of::<Recorder>() > 4 * size,
            "the recorder is the large part"
        );
    }
}
