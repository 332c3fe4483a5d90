//! The response body: a stored body on hits, the inner body on misses,
//! recorded on its way to the client when it may be stored
//! (`recorder.rs`).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::http::recorder::Recorder;

pin_project! {
    /// The body of a response that went through [`CacheAside`](crate::CacheAside).
    pub struct ResponseBody<B> {
        #[pin]
        content: Content<B>,
    }
}

pin_project! {
    #[project = ContentProj]
    enum Content<B> {
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
        let content = match &self.content {
            Content::Cached { .. } => "cached",
            Content::Inner {
                recorder: Some(_), ..
            } => "inner, recording",
            Content::Inner { .. } => "inner",
        };
        f.debug_struct("ResponseBody")
            .field("content", &content)
            .finish()
    }
}

impl<B> ResponseBody<B> {
    /// A body served from the store. `body` is empty for HEAD.
    pub(crate) fn cached(body: Bytes, trailers: Option<HeaderMap>) -> Self {
        ResponseBody {
            content: Content::Cached {
                data: (!body.is_empty()).then_some(body),
                trailers: trailers.map(Box::new),
            },
        }
    }

    /// The inner service's body, passed through.
    pub(crate) fn passthrough(inner: B) -> Self {
        ResponseBody {
            content: Content::Inner {
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
            content: Content::Inner {
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
        match self.project().content.project() {
            ContentProj::Cached { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            ContentProj::Inner {
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
        match &self.content {
            Content::Cached { data, trailers } => data.is_none() && trailers.is_none(),
            Content::Inner { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Cached { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Content::Inner { inner, .. } => inner.size_hint(),
        }
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
