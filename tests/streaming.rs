//! A miss streams: the client gets each frame as the origin yields it, and
//! the copy kept for the store never holds a frame back. Run against both
//! stores.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower::{service_fn, Layer, ServiceExt};

use support::{cache_status_of, get, Backend, STORED};

/// A body that yields its first chunk at once and its second only when the
/// test sends it.
struct Gated {
    first: Option<Bytes>,
    rest: Option<oneshot::Receiver<Bytes>>,
}

impl Body for Gated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(chunk) => {
                self.rest = None;
                Poll::Ready(chunk.ok().map(|c| Ok(Frame::data(c))))
            }
        }
    }
}

async fn a_miss_streams_before_the_origin_body_ends(backend: Backend) {
    let h = backend.harness("streaming").await;
    let (release, gate) = oneshot::channel::<Bytes>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let origin = service_fn(move |_req: http::Request<()>| {
        let rest = gate.lock().unwrap().take();
        async move {
            Ok::<_, Infallible>(Response::new(Gated {
                first: Some(Bytes::from_static(b"first,")),
                rest,
            }))
        }
    });
    let svc = h.layer(|b| b).layer(origin);

    let response = svc.clone().oneshot(get("/gated")).await.unwrap();
    assert_eq!(cache_status_of(response.headers()), STORED);
    let mut body = response.into_body();
    // The origin still holds its second chunk: the first must reach the
    // client now. (The timeout is a safety net, not a timing assertion.)
    let first = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("the first chunk arrives before the origin's body ends")
        .expect("a frame")
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first,");
    assert_eq!(h.store.stats().puts_started, 0, "nothing stored mid-body");

    release.send(Bytes::from_static(b"second")).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    h.store.wait_puts(1).await;

    let hit = svc.oneshot(get("/gated")).await.unwrap();
    assert!(cache_status_of(hit.headers()).starts_with("tower-cache-aside; hit"));
    let body = hit.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "first,second", "the stored copy is the whole body");
}

#[tokio::test]
async fn redis_a_miss_streams_before_the_origin_body_ends() {
    a_miss_streams_before_the_origin_body_ends(Backend::Redis).await;
}

#[tokio::test]
async fn memory_a_miss_streams_before_the_origin_body_ends() {
    a_miss_streams_before_the_origin_body_ends(Backend::Memory).await;
}
