//! [`CacheAsideLayer`] and its [`Builder`]: the configuration, validated
//! once.
//!
//! The layer is cheap to clone (one `Arc`); every service it makes shares
//! the same settings, store and state.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use tower_layer::Layer;

use crate::http::config::{Config, Route};
use crate::http::head_cache::HeadCache;
use crate::http::policy::{Freshness, PolicyConfig, TargetedField};
use crate::http::service::CacheAside;
use crate::http::shared::Shared;
use crate::key::{KeyConfig, QueryKey};
use crate::lease::Leases;
use crate::purge::{PurgeRules, Purger, Purges};
use crate::settings::{self, Common};
use crate::store::guarded::{Breaker, Guarded};
use crate::store::{IntoStore, Store};
use crate::util::time::StaleWindows;
use crate::Error;

/// A [`Layer`] that caches GET and HEAD responses of the service it wraps.
///
/// ```
/// use tower_cache_aside::{CacheAsideLayer, MemoryStore};
///
/// // With Redis: CacheAsideLayer::new(fred_client)
/// let layer = CacheAsideLayer::new(MemoryStore::new());
/// ```
///
/// See the [crate docs](crate) for what is stored and [`Builder`] for every
/// setting.
#[derive(Debug, Clone)]
pub struct CacheAsideLayer {
    shared: Arc<Shared>,
}

impl CacheAsideLayer {
    /// A layer with the default settings over `store`: a fred `Client` or
    /// `Pool`, a [`RedisStore`](crate::RedisStore), a
    /// [`MemoryStore`](crate::MemoryStore) or any [`Store`].
    pub fn new(store: impl IntoStore) -> CacheAsideLayer {
        Builder::new(store.into_store()).assemble(matchit::Router::new(), PurgeRules::default())
    }

    /// A builder to configure the layer over `store`.
    pub fn builder(store: impl IntoStore) -> Builder {
        Builder::new(store.into_store())
    }

    /// A handle to purge this layer's cached responses out of band.
    pub fn purger(&self) -> Purger {
        Purger::new(self.shared.purges.clone())
    }
}

impl<S> Layer<S> for CacheAsideLayer {
    type Service = CacheAside<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheAside::new(inner, self.shared.clone())
    }
}

/// Configures a [`CacheAsideLayer`]; [`Builder::build`] validates it.
///
/// ```
/// use std::time::Duration;
/// use http::header::ACCEPT_LANGUAGE;
/// use tower_cache_aside::{CacheAsideLayer, MemoryStore, Route};
///
/// let layer = CacheAsideLayer::builder(MemoryStore::new())
///     .prefix("shop:")
///     .ttl(Duration::from_secs(300))
///     .route("/products/{id}", Route::new().ttl(Duration::from_secs(30)))
///     .route("/admin/{*rest}", Route::bypass())
///     .query_ignore(["utm_source", "utm_campaign"])
///     .vary_by(ACCEPT_LANGUAGE)
///     .build()?;
/// # Ok::<(), tower_cache_aside::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    store: Arc<dyn Store>,
    common: Common,
    include_authority: bool,
    query: QueryKey,
    vary_by: Vec<HeaderName>,
    ttl: Duration,
    statuses: Vec<StatusCode>,
    max_body_bytes: usize,
    purge_timeout: Duration,
    stale_if_error: Duration,
    stale_from_response: bool,
    revalidation_window: Duration,
    freshness: Freshness,
    targeted: Vec<TargetedField>,
    decoded_heads: usize,
    max_variants: usize,
    routes: Vec<(String, Route)>,
    purge_rules: Vec<(Method, String, Vec<String>)>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("prefix", &self.common.prefix)
            .field("ttl", &self.ttl)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Builder {
    fn new(store: Arc<dyn Store>) -> Builder {
        Builder {
            store,
            common: Common::with_prefix(settings::DEFAULT_PREFIX),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
            ttl: settings::DEFAULT_TTL,
            statuses: settings::DEFAULT_STATUSES
                .iter()
                .filter_map(|code| StatusCode::from_u16(*code).ok())
                .collect(),
            max_body_bytes: settings::DEFAULT_MAX_BODY_BYTES,
            purge_timeout: settings::DEFAULT_PURGE_TIMEOUT,
            stale_if_error: Duration::ZERO,
            stale_from_response: false,
            revalidation_window: Duration::ZERO,
            freshness: Freshness::Configured,
            targeted: Vec::new(),
            decoded_heads: settings::DEFAULT_DECODED_HEADS,
            max_variants: settings::DEFAULT_MAX_VARIANTS,
            routes: Vec::new(),
            purge_rules: Vec::new(),
        }
    }

    settings::common_setters!("a request");

    /// Default time to live of stored responses (default 60 s). A response's
    /// own `s-maxage`, `max-age` or `Expires` can shorten it.
    pub fn ttl(mut self, ttl: Duration) -> Builder {
        self.ttl = ttl;
        self
    }

    /// Time to live of stored 404 and 410 responses (default 10 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Builder {
        self.common.negative_ttl = ttl;
        self
    }

    /// The most entries one resource (a path) may hold, across its queries,
    /// hosts and header values (`vary_by`, `Vary`; each URL whose responses
    /// vary also holds a vary record, which counts) (default 1024). Past it, a
    /// request for a
    /// new variant is served by the origin and not stored
    /// (`fwd=miss; detail=too-many-variants`), and the variants already
    /// stored keep hitting; the room comes back as they expire or are
    /// purged. A [`Route`] can set its own. Fails at `build` when zero.
    pub fn max_variants(mut self, max: usize) -> Builder {
        self.max_variants = max;
        self
    }

    /// Rules for the paths that match `template`, in axum's syntax
    /// (`/users/{id}`, `/files/{*path}`). The most specific template wins.
    pub fn route(mut self, template: impl Into<String>, route: Route) -> Builder {
        self.routes.push((template.into(), route));
        self
    }

    /// Never cache the paths that match `template`; short for
    /// `route(template, Route::bypass())`.
    pub fn exclude(self, template: impl Into<String>) -> Builder {
        self.route(template, Route::bypass())
    }

    /// Only these query parameters are part of the key; the others are
    /// ignored (responses must not depend on them).
    pub fn query_allowlist<I, N>(mut self, names: I) -> Builder
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.query = QueryKey::Allow(names.into_iter().map(Into::into).collect());
        self
    }

    /// These query parameters are left out of the key (tracking parameters,
    /// for instance); all others are in it.
    pub fn query_ignore<I, N>(mut self, names: I) -> Builder
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.query = QueryKey::Ignore(names.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a request header to every key of the layer, so that its values
    /// get separate entries. A response's `Vary` needs none of this: the
    /// layer keys its resource on the headers it names by itself. This is
    /// for a header every answer depends on without saying so, and to opt
    /// in: keying on `Authorization` or `Cookie` makes those requests
    /// cacheable, one entry per credential.
    pub fn vary_by(mut self, header: HeaderName) -> Builder {
        if !self.vary_by.contains(&header) {
            self.vary_by.push(header);
        }
        self
    }

    /// The response statuses that may be stored (default 200, 203, 204,
    /// 300, 301, 308, 404, 410).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Builder {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Largest body stored (default 1 MiB). Larger bodies stream through
    /// uncached, and no more than this is ever buffered per response.
    pub fn max_body_bytes(mut self, bytes: usize) -> Builder {
        self.max_body_bytes = bytes;
        self
    }

    /// Whether the authority (`Host`) is part of the key (default yes).
    /// Turn it off only when one app answers the same for every host name.
    pub fn include_authority(mut self, include: bool) -> Builder {
        self.include_authority = include;
        self
    }

    /// Deadline of the purges a mutating request waits for, and of
    /// [`Purger`] calls (default 1 s). A purge that misses it is retried in
    /// the background (see [`Purger`]).
    pub fn purge_timeout(mut self, timeout: Duration) -> Builder {
        self.purge_timeout = timeout;
        self
    }

    /// When the origin answers 5xx or fails, serve an entry up to `window`
    /// past its freshness instead (`Cache-Status: …; hit; fwd=stale;
    /// detail=stale-if-error`). Default: off.
    pub fn stale_if_error(mut self, window: Duration) -> Builder {
        self.stale_if_error = window;
        self
    }

    /// Let a response's own `stale-while-revalidate=N` and
    /// `stale-if-error=N` (RFC 5861) set its windows to N seconds (at most
    /// a day), even past the layer's or where the layer has none (default:
    /// off, and they can only shorten the layer's windows). Either way, a
    /// response with `must-revalidate`, `proxy-revalidate` or `no-cache`
    /// is never served stale, nor one with `s-maxage` that grants no
    /// window of its own.
    pub fn stale_from_response(mut self, honour: bool) -> Builder {
        self.stale_from_response = honour;
        self
    }

    /// Keep an entry that has a validator (a 200 with an `ETag` or a
    /// `Last-Modified`) up to `window` past its freshness and stale
    /// windows, so that a request for it asks the inner service whether it
    /// changed (`If-None-Match`, `If-Modified-Since`) instead of fetching
    /// it whole (default: off). A `304` refreshes the stored headers and
    /// freshness and serves the stored body (`Cache-Status: …; fwd=stale;
    /// fwd-status=304`); any other answer is handled as a miss. One
    /// request revalidates an entry at a time, across instances (it holds
    /// the fill lease). With a window, a `Cache-Control: no-cache`
    /// response with a validator is stored too, and revalidated before
    /// every use.
    pub fn revalidation_window(mut self, window: Duration) -> Builder {
        self.revalidation_window = window;
        self
    }

    /// Where stored responses' freshness lifetimes come from (default
    /// [`Freshness::Configured`]: the TTL, which a response's own
    /// directives can only shorten). With [`Freshness::Explicit`] or
    /// [`Freshness::Heuristic`] only what the response says is fresh is
    /// stored, and the TTL is the upper bound. A [`Route`] can set its own.
    pub fn freshness(mut self, freshness: Freshness) -> Builder {
        self.freshness = freshness;
        self
    }

    /// Obeys `field`, a targeted cache-control field (RFC 9213) such as
    /// `CDN-Cache-Control`, ahead of `Cache-Control`: where a response
    /// carries it, non-empty, as a valid Structured Fields Dictionary, its
    /// directives decide storage and reuse, and neither `Cache-Control`
    /// nor `Expires` is read, so an app can tell the layer one thing and
    /// browsers another. The field is passed on, for the caches after this
    /// one. HTTP's own fields (`Vary`, `Set-Cookie`, `Expires`, …) are
    /// refused at `build`. Fields given by several
    /// calls (of this and [`own_targeted_field`](Self::own_targeted_field))
    /// are obeyed in call order, the first present and valid winning.
    pub fn targeted_field(self, field: HeaderName) -> Builder {
        self.add_targeted(field, false)
    }

    /// As [`targeted_field`](Self::targeted_field), for a field that names
    /// this layer alone (`Tower-Cache-Control`, say): it is removed from
    /// every response before it is stored or sent on.
    pub fn own_targeted_field(self, field: HeaderName) -> Builder {
        self.add_targeted(field, true)
    }

    fn add_targeted(mut self, name: HeaderName, own: bool) -> Builder {
        self.targeted.retain(|f| f.name != name);
        self.targeted.push(TargetedField { name, own });
        self
    }

    /// How many entries' decoded heads the layer keeps (default 2,048).
    /// A hit on an entry whose stored head is the one decoded last time
    /// clones that decoded head instead of parsing the stored fields again;
    /// what is served is the same either way. A kept head takes about
    /// 1 KiB (at most 3.5 KiB), so the default holds at most about 7 MiB.
    /// 0 keeps none: every hit decodes its entry in full; more than
    /// 1,048,576 is an error at `build`.
    pub fn decoded_heads(mut self, entries: usize) -> Builder {
        self.decoded_heads = entries;
        self
    }

    /// When a `method` request whose path matches `template` succeeds (2xx
    /// or 3xx), purge `targets` too, besides the request's own path.
    ///
    /// Templates use axum's syntax; targets may use the template's
    /// parameters (`{id}`) and `*` wildcards (any run of characters):
    ///
    /// ```
    /// use http::Method;
    /// use tower_cache_aside::{CacheAsideLayer, MemoryStore};
    ///
    /// let layer = CacheAsideLayer::builder(MemoryStore::new())
    ///     .purge_on(Method::PUT, "/users/{id}", ["/users/{id}", "/users", "/teams/*/members"])
    ///     .purge_on(Method::POST, "/users", ["/users"])
    ///     .build()?;
    /// # Ok::<(), tower_cache_aside::Error>(())
    /// ```
    ///
    /// A target that names a parameter the template does not capture, or a
    /// second rule for the same method and template, fails [`build`](Self::build).
    pub fn purge_on<I, T>(
        mut self,
        method: Method,
        template: impl Into<String>,
        targets: I,
    ) -> Builder
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.purge_rules.push((
            method,
            template.into(),
            targets.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<CacheAsideLayer, Error> {
        self.common.validate()?;
        if self.ttl.is_zero() {
            return Err(Error::InvalidConfig("a ttl of zero stores nothing".into()));
        }
        if self.decoded_heads > settings::MAX_DECODED_HEADS {
            return Err(Error::InvalidConfig(format!(
                "decoded_heads is at most {}, not {}",
                settings::MAX_DECODED_HEADS,
                self.decoded_heads
            )));
        }
        if u32::try_from(self.max_body_bytes).is_err() {
            return Err(Error::InvalidConfig(
                "max_body_bytes must fit in 32 bits".into(),
            ));
        }
        if let Some(field) = self
            .targeted
            .iter()
            .find(|f| settings::HTTP_FIELDS.contains(&f.name.as_str()))
        {
            return Err(Error::InvalidConfig(format!(
                "{} is a field of HTTP's own, not a targeted cache-control field",
                field.name
            )));
        }
        // Entries carry their windows in 32 bits of milliseconds.
        for (name, window) in [
            ("stale_while_revalidate", self.common.stale_while_revalidate),
            ("stale_if_error", self.stale_if_error),
        ] {
            if window > settings::MAX_STALE_WINDOW {
                return Err(Error::InvalidConfig(format!(
                    "{name} is at most {} days",
                    settings::MAX_STALE_WINDOW.as_secs() / 86_400
                )));
            }
        }
        if self.max_variants == 0 {
            return Err(Error::InvalidConfig(
                "max_variants of zero stores nothing; use exclude".into(),
            ));
        }
        let mut routes = matchit::Router::new();
        for (template, route) in &self.routes {
            let invalid = |reason: String| Error::InvalidRoute {
                template: template.clone(),
                reason,
            };
            if !template.starts_with('/') {
                return Err(invalid("a template starts with `/`".into()));
            }
            route.check().map_err(|reason| invalid(reason.into()))?;
            routes
                .insert(template.clone(), route.clone())
                .map_err(|e| invalid(e.to_string()))?;
        }
        let mut purge_rules = PurgeRules::default();
        for (method, template, targets) in &self.purge_rules {
            purge_rules.add(method.clone(), template, targets)?;
        }
        Ok(self.assemble(routes, purge_rules))
    }

    fn assemble(self, routes: matchit::Router<Route>, purge_rules: PurgeRules) -> CacheAsideLayer {
        let common = self.common;
        let (failures, cool_down) = common.breaker;
        let store = Arc::new(Guarded::new(
            self.store,
            common.store_timeout,
            Breaker::new(failures, cool_down),
        ));
        let keys = KeyConfig {
            prefix: Arc::from(common.prefix),
            include_authority: self.include_authority,
            query: self.query,
            vary_by: self.vary_by,
        };
        let purges = Purges::new(store.clone(), keys.clone(), purge_rules, self.purge_timeout);
        CacheAsideLayer {
            shared: Arc::new(Shared {
                config: Config {
                    keys,
                    policy: PolicyConfig {
                        ttl: self.ttl,
                        negative_ttl: common.negative_ttl,
                        statuses: self.statuses,
                        max_body_bytes: self.max_body_bytes,
                        freshness: self.freshness,
                        targeted: self.targeted,
                        stale: StaleWindows {
                            while_revalidate: common.stale_while_revalidate,
                            if_error: self.stale_if_error,
                        },
                        stale_from_response: self.stale_from_response,
                        revalidation_window: self.revalidation_window,
                    },
                    ttl_jitter: common.ttl_jitter,
                    max_variants: self.max_variants,
                    routes,
                },
                leases: Leases::new(store, common.lease_ttl, common.fill_wait),
                heads: HeadCache::with_capacity(self.decoded_heads),
                purges: Arc::new(purges),
                vary: Default::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn bad_templates_fail_at_build() {
        let err = CacheAsideLayer::builder(MemoryStore::new())
            .route("/users/{id}", Route::new())
            .route("/users/{name}", Route::new())
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRoute { ref template, .. } if template == "/users/{name}"),
            "{err}"
        );
        let err = CacheAsideLayer::builder(MemoryStore::new())
            .exclude("users")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`users`"), "{err}");
    }

    #[test]
    fn bad_prefixes_fail_at_build() {
        for prefix in ["a{b", "a}b", "a*", "a b", "x?"] {
            let result = CacheAsideLayer::builder(MemoryStore::new())
                .prefix(prefix)
                .build();
            assert!(matches!(result, Err(Error::InvalidConfig(_))), "{prefix}");
        }
    }

    #[test]
    fn targeted_fields_and_stale_windows_are_checked_at_build() {
        let with =
            |b: fn(Builder) -> Builder| b(CacheAsideLayer::builder(MemoryStore::new())).build();
        for refused in [
            |b: Builder| b.targeted_field(http::header::CACHE_CONTROL),
            |b: Builder| b.own_targeted_field(http::header::VARY),
            |b: Builder| b.own_targeted_field(http::header::SET_COOKIE),
            |b: Builder| b.stale_if_error(Duration::from_secs(50 * 86_400)),
            |b: Builder| b.stale_while_revalidate(Duration::MAX),
        ] {
            assert!(matches!(with(refused), Err(Error::InvalidConfig(_))));
        }
        let layer = with(|b| {
            b.own_targeted_field(HeaderName::from_static("tower-cache-control"))
                .targeted_field(HeaderName::from_static("cdn-cache-control"))
                .targeted_field(HeaderName::from_static("tower-cache-control"))
                .stale_if_error(Duration::from_secs(49 * 86_400))
        })
        .unwrap();
        // A name given twice is obeyed once, as last said.
        let fields = &layer.shared.config.policy.targeted;
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].name, "tower-cache-control");
        assert!(!fields[1].own);
    }

    #[test]
    fn decoded_heads_are_bounded_at_build() {
        let heads = |entries| {
            CacheAsideLayer::builder(MemoryStore::new())
                .decoded_heads(entries)
                .build()
        };
        assert_eq!(heads(0).unwrap().shared.heads.capacity(), 0);
        assert_eq!(heads(100).unwrap().shared.heads.capacity(), 128);
        assert_eq!(
            CacheAsideLayer::new(MemoryStore::new())
                .shared
                .heads
                .capacity(),
            2048
        );
        assert!(heads(settings::MAX_DECODED_HEADS).is_ok());
        let err = heads(settings::MAX_DECODED_HEADS + 1).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(heads(usize::MAX).is_err());
    }

    #[test]
    fn the_most_specific_route_wins() {
        let layer = CacheAsideLayer::builder(MemoryStore::new())
            .route("/users/{id}", Route::new().ttl(Duration::from_secs(5)))
            .exclude("/users/me")
            .build()
            .unwrap();
        assert!(layer.shared.config.route("/users/me").unwrap().is_bypass());
        assert_eq!(
            layer.shared.config.route("/users/7").unwrap().rules().ttl,
            Some(Duration::from_secs(5))
        );
        assert!(layer.shared.config.route("/teams").is_none());
    }
}
