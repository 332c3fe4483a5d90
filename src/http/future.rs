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

use crate::http::body::ResponseBody;
use crate::http::cache_status::Outcome;
use crate::http::lookup::{look_up, Cacheable, Usable};
use crate::http::policy::has_validator;
use crate::http::response::{self, refresh_in_background, Served};
use crate::http::shared::Shared;
use crate::lease::{Fill, Found};
use crate::purge::{self, Purge, PurgePaths, PurgeReport};

/// A store lookup under its deadline. It owns what it needs and gives the
/// request's context back, so nothing is cloned for it.
type LookupFuture = Pin<Box<dyn Future<Output = (Box<Cacheable>, Found<Usable>)> + Send>>;
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
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Lookup {
            lookup: LookupFuture,
            pending: Option<(S, Request<ReqBody>)>,
        },
        Inner {
            #[pin]
            future: S::Future,
            then: Option<OnResponse>,
        },
        Purge {
            purging: Purging,
            response: Option<S::Response>,
        },
        Done,
    }
}

/// What to do with the inner service's response.
enum OnResponse {
    Forward(Outcome),
    /// Boxed (since the request was classified), so the future stays small.
    Miss(Box<Cacheable>),
    Write(Write),
}

/// What a request with an unsafe method carries over to its response.
#[derive(Debug)]
pub(crate) struct Write {
    /// The request path and the matching rules' targets.
    pub(crate) purges: Vec<Purge>,
    pub(crate) authority: String,
    pub(crate) path: String,
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
    pub(crate) fn forward(future: S::Future, outcome: Outcome, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(OnResponse::Forward(outcome)),
            },
            shared,
        }
    }

    /// Waits for the inner service, then for the purges of a successful
    /// write, before the response is returned (read your writes).
    pub(crate) fn write(future: S::Future, write: Write, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(OnResponse::Write(write)),
            },
            shared,
        }
    }

    /// Waits for the inner service of a miss that skipped the lookup.
    pub(crate) fn miss(future: S::Future, cacheable: Box<Cacheable>, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::Inner {
                future,
                then: Some(OnResponse::Miss(cacheable)),
            },
            shared,
        }
    }

    /// Looks the request up first; calls `service` (already ready) on a miss.
    pub(crate) fn lookup(
        service: S,
        request: Request<ReqBody>,
        cacheable: Box<Cacheable>,
        shared: Arc<Shared>,
    ) -> Self {
        ResponseFuture {
            state: State::Lookup {
                lookup: lookup_future(shared.clone(), cacheable),
                pending: Some((service, request)),
            },
            shared,
        }
    }
}

/// The lookup of `cacheable`'s key, owning what it needs.
fn lookup_future(shared: Arc<Shared>, mut cacheable: Box<Cacheable>) -> LookupFuture {
    Box::pin(async move {
        let found = look_up(&shared, &mut cacheable).await;
        (cacheable, found)
    })
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
                    let (cacheable, found) = ready!(lookup.as_mut().poll(cx));
                    let Some((mut service, request)) = pending.take() else {
                        this.state.set(State::Done);
                        continue;
                    };
                    match found {
                        // The resource varies on these fields: look up the
                        // variant they give (once: a record found under a
                        // variant is not the layer's, and is a miss).
                        Found::Varies(names) if cacheable.varying.names.is_none() => {
                            let mut cacheable = cacheable;
                            this.shared.vary.set(&cacheable.varying.base, Some(&names));
                            cacheable.key = cacheable.varying.key_for(
                                &cacheable.key,
                                Some(&names),
                                request.headers(),
                            );
                            cacheable.varying.names = Some(names);
                            this.state.set(State::Lookup {
                                lookup: lookup_future(this.shared.clone(), cacheable),
                                pending: Some((service, request)),
                            });
                            continue;
                        }
                        // Judged so only at a base variant: unreachable,
                        // and a miss if it were not.
                        Found::Varies(_) => {}
                        Found::Fresh(usable) => {
                            let response = response::hit(
                                &this.shared.config.policy,
                                &cacheable,
                                usable,
                                Some(request.headers()),
                                Served::Fresh,
                            );
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Found::Stale(usable) => {
                            let mut cacheable = cacheable;
                            // The refresh asks whether it changed, when it
                            // can tell: it keeps the entry to store again
                            // on a 304.
                            let kept = (cacheable.fill.lease.is_some()
                                && has_validator(usable.entry.status, &usable.entry.headers))
                            .then(|| Box::new(usable.clone()));
                            let response = response::hit(
                                &this.shared.config.policy,
                                &cacheable,
                                usable,
                                Some(request.headers()),
                                Served::Stale(None),
                            );
                            if cacheable.fill.lease.is_some() {
                                cacheable.fill.fallback = kept;
                                refresh_in_background(
                                    this.shared.clone(),
                                    service,
                                    request,
                                    *cacheable,
                                );
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Found::Miss if cacheable.varying.should_look_again(&cacheable.fill) => {
                            // The resource's `Vary` changed while this
                            // request waited: look again where the memo
                            // now says, or from the base variant. The
                            // lease taken meanwhile is let go.
                            let mut cacheable = cacheable;
                            let names = this.shared.vary.get(&cacheable.varying.base);
                            let varying = &mut cacheable.varying;
                            varying.looked_again = true;
                            cacheable.key =
                                varying.key_for(&cacheable.key, names.as_ref(), request.headers());
                            varying.names = names;
                            cacheable.fill = Fill {
                                collapsed: true,
                                ..Fill::default()
                            };
                            this.state.set(State::Lookup {
                                lookup: lookup_future(this.shared.clone(), cacheable),
                                pending: Some((service, request)),
                            });
                            continue;
                        }
                        Found::Miss => {}
                    }
                    let (mut cacheable, mut request) = (cacheable, request);
                    if cacheable.fill.lease.is_some() {
                        // Its response may vary on fields the key does
                        // not hold yet.
                        cacheable.varying.request = Some(request.headers().clone());
                        // A kept stale entry, and this request holds its
                        // lease: ask the inner service whether it changed.
                        if let Some(stale) = cacheable.fill.fallback.as_deref() {
                            if has_validator(stale.entry.status, &stale.entry.headers) {
                                cacheable.revalidation = Some(response::ask_if_changed(
                                    request.headers_mut(),
                                    &stale.entry.headers,
                                ));
                            }
                        }
                    }
                    cacheable.requested_ms = crate::util::time::now_ms();
                    let future = service.call(request);
                    this.state.set(State::Inner {
                        future,
                        then: Some(OnResponse::Miss(cacheable)),
                    });
                }
                StateProj::Inner { future, then } => {
                    let result = ready!(future.poll(cx));
                    // The stale entry is unchanged: refresh and serve it.
                    let result = match (result, then.take()) {
                        (Ok(response), Some(OnResponse::Miss(cacheable)))
                            if response.status() == http::StatusCode::NOT_MODIFIED
                                && cacheable.revalidation.is_some() =>
                        {
                            this.state.set(State::Done);
                            let response = response::revalidated(this.shared, response, *cacheable);
                            return Poll::Ready(Ok(response));
                        }
                        (result, taken) => {
                            *then = taken;
                            result
                        }
                    };
                    // stale-if-error: the origin failed, and a stale entry
                    // within its window answers instead.
                    if let Some(OnResponse::Miss(cacheable)) = then.as_mut() {
                        let failed = match &result {
                            Ok(response) => response.status().is_server_error(),
                            Err(_) => true,
                        };
                        let layer = this.shared.config.policy.stale;
                        let answers = failed
                            && cacheable
                                .fill
                                .fallback
                                .as_ref()
                                .is_some_and(|s| s.answers_errors_now(layer));
                        if let (true, Some(stale)) = (answers, cacheable.fill.fallback.take()) {
                            let response = response::hit(
                                &this.shared.config.policy,
                                cacheable,
                                stale.recounted(),
                                None,
                                Served::Stale(Some("stale-if-error")),
                            );
                            // Dropping the request's context releases any
                            // lease.
                            *then = None;
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                    }
                    let mut response = result?;
                    let response = match then.take() {
                        Some(OnResponse::Miss(cacheable)) => {
                            response::miss(this.shared, response, *cacheable)
                        }
                        Some(OnResponse::Forward(outcome)) => {
                            response::forwarded(this.shared, response, outcome)
                        }
                        Some(OnResponse::Write(write)) if purge::purges_on(response.status()) => {
                            let mut purges = write.purges;
                            let all = this.shared.purges.clone();
                            if let Some(named) = response.extensions_mut().remove::<PurgePaths>() {
                                all.add_named(&mut purges, &named);
                            }
                            all.add_locations(
                                &mut purges,
                                response.headers(),
                                &write.authority,
                                &write.path,
                            );
                            let purging: Purging = Box::pin(async move { all.purge(purges).await });
                            this.state.set(State::Purge {
                                purging,
                                response: Some(response),
                            });
                            continue;
                        }
                        Some(OnResponse::Write(_)) => {
                            response.extensions_mut().remove::<PurgePaths>();
                            response::forwarded(this.shared, response, Outcome::Method)
                        }
                        None => {
                            response::forwarded(this.shared, response, Outcome::Bypass("internal"))
                        }
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
                    let outcome = Outcome::Purged {
                        removed: report.removed,
                        failed: report.failed,
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response::forwarded(this.shared, response, outcome)));
                }
                // Polled after completion: like a fused future, stay pending.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
