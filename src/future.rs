//! [`ResponseFuture`]: the lookup, then (on a miss) the inner call.
//!
//! A named future rather than a boxed one, so users can name the service's
//! future type. The one allocation on the lookup path is the store call
//! itself (a boxed future owning its key and deadline).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::cache_status::Outcome;
use crate::layer::Config;
use crate::lease;
use crate::lease::Found;
use crate::purge::{self, Purge, PurgeReport};
use crate::service::{
    forwarded_response, hit_response, miss_response, refresh_in_background, MissContext,
    WriteContext,
};

/// A store lookup under its deadline. It owns what it needs and gives the
/// miss context back, so nothing is cloned for it.
type Lookup = Pin<Box<dyn Future<Output = (Box<MissContext>, LookupResult)> + Send>>;
type LookupResult = Result<Found, &'static str>;
/// The purges of a successful write, run concurrently under their deadline.
type Purging = Pin<Box<dyn Future<Output = PurgeReport> + Send>>;

pin_project! {
    /// Response future of [`CacheAside`](crate::CacheAside).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        config: Arc<Config>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Lookup {
            lookup: Lookup,
            pending: Option<(S, Request<ReqBody>)>,
        },
        Inner {
            #[pin]
            future: S::Future,
            then: Option<Then>,
        },
        Purge {
            purging: Purging,
            response: Option<S::Response>,
        },
        Done,
    }
}

/// What to do with the inner service's response.
enum Then {
    Forward(Outcome),
    /// Boxed (since the request was classified), so the future stays small.
    Miss(Box<MissContext>),
    Write(WriteContext),
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Waits for the inner service only.
    pub(crate) fn forward(future: S::Future, outcome: Outcome, config: Arc<Config>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(Then::Forward(outcome)),
            },
            config,
        }
    }

    /// Waits for the inner service, then for the purges of a successful
    /// write, before the response is returned (read your writes).
    pub(crate) fn write(future: S::Future, write: WriteContext, config: Arc<Config>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(Then::Write(write)),
            },
            config,
        }
    }

    /// Waits for the inner service of a miss that skipped the lookup.
    pub(crate) fn miss(future: S::Future, miss: Box<MissContext>, config: Arc<Config>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(Then::Miss(miss)),
            },
            config,
        }
    }

    /// Looks `miss.key` up first; calls `service` (already ready) on a miss.
    pub(crate) fn lookup(
        service: S,
        request: Request<ReqBody>,
        miss: Box<MissContext>,
        config: Arc<Config>,
    ) -> Self {
        let shared = config.clone();
        let lookup: Lookup = Box::pin(async move {
            let mut miss = miss;
            let result = if miss.is_head {
                lease::get(&shared, &mut miss).await
            } else {
                lease::find(&shared, &mut miss).await
            };
            (miss, result)
        });
        ResponseFuture {
            state: State::Lookup {
                lookup,
                pending: Some((service, request)),
            },
            config,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { lookup, pending } => {
                    let (mut miss, result) = ready!(lookup.as_mut().poll(cx));
                    let Some((mut service, request)) = pending.take() else {
                        this.state.set(State::Done);
                        continue;
                    };
                    match result {
                        Ok(Found::Fresh(entry, now)) => {
                            let response =
                                hit_response(&miss, entry, now, Some(request.headers()), None);
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Ok(Found::Stale(entry, now)) => {
                            let response = hit_response(
                                &miss,
                                entry,
                                now,
                                Some(request.headers()),
                                Some(None),
                            );
                            if miss.lease.is_some() {
                                refresh_in_background(this.config.clone(), service, request, *miss);
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Ok(Found::Nothing) => {}
                        Err(detail) => miss.detail = Some(detail),
                    }
                    let future = service.call(request);
                    this.state.set(State::Inner {
                        future,
                        then: Some(Then::Miss(miss)),
                    });
                }
                StateProj::Inner { future, then } => {
                    let result = ready!(future.poll(cx));
                    // stale-if-error: the origin failed, and a stale entry
                    // within its window answers instead.
                    if let Some(Then::Miss(miss)) = then.as_mut() {
                        let failed = match &result {
                            Ok(response) => response.status().is_server_error(),
                            Err(_) => true,
                        };
                        if let (true, Some(stale)) = (failed, miss.stale.take()) {
                            let response = hit_response(
                                miss,
                                *stale,
                                crate::service::now_ms(),
                                None,
                                Some(Some("stale-if-error")),
                            );
                            // Dropping the miss context releases any lease.
                            *then = None;
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                    let response = result?;
                    let response = match then.take() {
                        Some(Then::Miss(miss)) => miss_response(this.config, response, *miss),
                        Some(Then::Forward(outcome)) => forwarded_response(response, outcome),
                        Some(Then::Write(write)) if purge::purges_on(response.status()) => {
                            let mut purges = write.purges;
                            for path in purge::location_paths(
                                response.headers(),
                                &write.authority,
                                &write.path,
                            ) {
                                let resource =
                                    Purge::Resource(this.config.keys.resource_key(&path));
                                if !purges.contains(&resource) {
                                    purges.push(resource);
                                }
                            }
                            let config = this.config.clone();
                            let purging: Purging = Box::pin(async move {
                                purge::run(&config, purges, config.purge_timeout).await
                            });
                            this.state.set(State::Purge {
                                purging,
                                response: Some(response),
                            });
                            continue;
                        }
                        Some(Then::Write(_)) => forwarded_response(response, Outcome::Method),
                        None => forwarded_response(response, Outcome::Bypass("internal")),
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Purge { purging, response } => {
                    let report = ready!(purging.as_mut().poll(cx));
                    let Some(response) = response.take() else {
                        this.state.set(State::Done);
                        continue;
                    };
                    let failed = !report.failed.is_empty();
                    purge::retry_later(this.config, report.failed);
                    let outcome = Outcome::Purged {
                        removed: report.removed,
                        failed,
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(forwarded_response(response, outcome)));
                }
                // Polled after completion: like a fused future, stay pending.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
