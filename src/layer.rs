//! [`CacheAsideLayer`] and its [`Builder`]: all configuration, validated once.
//!
//! The layer is cheap to clone (one `Arc`); every service it makes shares
//! the same configuration and store.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use tower_layer::Layer;

use crate::breaker::Breaker;
use crate::key::{KeyConfig, QueryKey};
use crate::policy::{PolicyConfig, DEFAULT_STATUSES};
use crate::purge::{Pending, Purge, PurgeRules, Purger};
use crate::service::CacheAside;
use crate::store::{IntoStore, Store};
use crate::Error;

const DEFAULT_PREFIX: &str = "tca:";
const DEFAULT_TTL: Duration = Duration::from_secs(60);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_PURGE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(2);

/// Caching rules for the requests whose path matches one route template.
///
/// ```
/// use std::time::Duration;
/// use tower_cache_aside::Route;
///
/// let users = Route::new().ttl(Duration::from_secs(30)).negative_ttl(Duration::from_secs(2));
/// let admin = Route::bypass();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Route {
    ttl: Option<Duration>,
    negative_ttl: Option<Duration>,
    bypass: bool,
}

impl Route {
    /// A route that uses the layer's defaults until told otherwise.
    pub fn new() -> Route {
        Route::default()
    }

    /// A route that is never looked up nor stored.
    pub fn bypass() -> Route {
        Route {
            bypass: true,
            ..Route::default()
        }
    }

    /// Time to live of this route's stored responses (404 and 410 excepted).
    pub fn ttl(mut self, ttl: Duration) -> Route {
        self.ttl = Some(ttl);
        self
    }

    /// Time to live of this route's stored 404 and 410 responses.
    pub fn negative_ttl(mut self, ttl: Duration) -> Route {
        self.negative_ttl = Some(ttl);
        self
    }

    pub(crate) fn ttls(&self) -> (Option<Duration>, Option<Duration>) {
        (self.ttl, self.negative_ttl)
    }

    pub(crate) fn is_bypass(&self) -> bool {
        self.bypass
    }
}

/// Everything a [`CacheAside`] service needs, shared by all its clones.
pub(crate) struct Config {
    /// The store, for purges and background lease releases (each under
    /// a deadline of its own).
    pub(crate) store: Arc<dyn Store>,
    /// The store the request path calls, within `store_timeout`.
    timed: crate::breaker::Timed,
    pub(crate) keys: KeyConfig,
    pub(crate) policy: PolicyConfig,
    pub(crate) store_timeout: Duration,
    pub(crate) purge_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) fill_wait: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) ttl_jitter: f64,
    /// Test-only switch: fills written without checking their lease.
    pub(crate) fencing: bool,
    pub(crate) pending: Pending,
    pub(crate) breaker: Breaker,
    /// The entry heads decoded lately, reused by hits (`heads.rs`).
    pub(crate) heads: crate::heads::Heads,
    routes: matchit::Router<Route>,
    purge_rules: PurgeRules,
}

/// `ttl` shortened by a random fraction of at most `jitter` (0 to 1), so
/// that entries written together do not expire together. Used by the layer
/// and the typed cache.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    ttl.mul_f64(1.0 - jitter * fastrand::f64())
        .max(Duration::from_millis(1))
}

impl Config {
    /// Runs the store call `call` makes within `store_timeout` and tells
    /// the circuit breaker how it went. A late call is an
    /// [`Error::Timeout`].
    pub(crate) async fn store_call<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn Store) -> crate::StoreFuture<'a, T>,
    ) -> Result<T, Error> {
        self.timed.run(&self.breaker, call).await
    }

    /// How long an entry is kept past its freshness, for serving it stale.
    pub(crate) fn grace(&self) -> Duration {
        self.stale_while_revalidate.max(self.stale_if_error)
    }

    /// `ttl` shortened by a random fraction of at most `ttl_jitter`, so
    /// that entries written together do not expire together.
    pub(crate) fn jittered(&self, ttl: Duration) -> Duration {
        jittered(ttl, self.ttl_jitter)
    }

    /// What a successful unsafe `method` request to `path` purges: the path
    /// itself and the matching rules' targets, without duplicates.
    pub(crate) fn purges_for(&self, method: &Method, path: &str) -> Vec<Purge> {
        let mut purges = vec![Purge::Resource(self.keys.resource_key(path))];
        for purge in self.purge_rules.targets(&self.keys, method, path) {
            if !purges.contains(&purge) {
                purges.push(purge);
            }
        }
        purges
    }

    /// The rules for a request path: the matching route's, or the defaults.
    pub(crate) fn route(&self, path: &str) -> Option<&Route> {
        self.routes.at(path).ok().map(|m| m.value)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("store_timeout", &self.store_timeout)
            .field("purge_timeout", &self.purge_timeout)
            .field("purge_rules", &self.purge_rules)
            .finish_non_exhaustive()
    }
}

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
    config: Arc<Config>,
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
        Purger::new(self.config.clone())
    }
}

impl<S> Layer<S> for CacheAsideLayer {
    type Service = CacheAside<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheAside::new(inner, self.config.clone())
    }
}

/// Fails on a key prefix that would break the key layout.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), Error> {
    if let Some(bad) = prefix.chars().find(|c| {
        matches!(c, '{' | '}' | '*' | '?' | '[' | ']' | '\\') || c.is_whitespace() || c.is_control()
    }) {
        return Err(Error::InvalidConfig(format!(
            "prefix {prefix:?} contains {bad:?}, which would break the key layout"
        )));
    }
    Ok(())
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
    prefix: String,
    include_authority: bool,
    query: QueryKey,
    vary_by: Vec<HeaderName>,
    ttl: Duration,
    negative_ttl: Duration,
    statuses: Vec<StatusCode>,
    max_body_bytes: usize,
    store_timeout: Duration,
    purge_timeout: Duration,
    lease_ttl: Duration,
    fill_wait: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    ttl_jitter: f64,
    breaker: (u32, Duration),
    decoded_heads: usize,
    fencing: bool,
    routes: Vec<(String, Route)>,
    purge_rules: Vec<(Method, String, Vec<String>)>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Builder {
    fn new(store: Arc<dyn Store>) -> Builder {
        Builder {
            store,
            prefix: DEFAULT_PREFIX.to_owned(),
            include_authority: true,
            query: QueryKey::All,
            vary_by: Vec::new(),
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            statuses: DEFAULT_STATUSES
                .iter()
                .filter_map(|code| StatusCode::from_u16(*code).ok())
                .collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            purge_timeout: DEFAULT_PURGE_TIMEOUT,
            lease_ttl: crate::lease::DEFAULT_LEASE_TTL,
            fill_wait: crate::lease::DEFAULT_FILL_WAIT,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            ttl_jitter: 0.0,
            decoded_heads: crate::heads::DEFAULT_HEADS,
            breaker: (DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_COOL_DOWN),
            fencing: true,
            routes: Vec::new(),
            purge_rules: Vec::new(),
        }
    }

    /// Prefix of every store key (default `tca:`). Apps sharing one Redis
    /// give each its own. May not contain `{`, `}`, glob characters
    /// (`*?[]\`), white space or control characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Builder {
        self.prefix = prefix.into();
        self
    }

    /// Default time to live of stored responses (default 60 s). A response's
    /// own `s-maxage`, `max-age` or `Expires` can shorten it.
    pub fn ttl(mut self, ttl: Duration) -> Builder {
        self.ttl = ttl;
        self
    }

    /// Time to live of stored 404 and 410 responses (default 10 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Builder {
        self.negative_ttl = ttl;
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

    /// Adds a request header to the key, so that its values get separate
    /// entries, and lets responses carry `Vary: <header>`. Keying on
    /// `Authorization` or `Cookie` opts those requests in to caching, one
    /// entry per credential.
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

    /// Deadline of each store call (default 50 ms). A lookup that misses it
    /// is a miss; a write that misses it is skipped.
    pub fn store_timeout(mut self, timeout: Duration) -> Builder {
        self.store_timeout = timeout;
        self
    }

    /// Deadline of the purges a mutating request waits for, and of
    /// [`Purger`] calls (default 1 s). A purge that misses it is retried in
    /// the background (see [`Purger`]).
    pub fn purge_timeout(mut self, timeout: Duration) -> Builder {
        self.purge_timeout = timeout;
        self
    }

    /// How long a fill lease holds if its holder never releases it (a
    /// crashed process), default 10 s. Only the holder of an entry's lease
    /// calls the origin for it and stores it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Builder {
        self.lease_ttl = ttl;
        self
    }

    /// How long a request that misses while another holds the fill lease
    /// waits for that fill (default 3 s); past it, the request calls the
    /// origin itself and stores nothing.
    pub fn fill_wait(mut self, wait: Duration) -> Builder {
        self.fill_wait = wait;
        self
    }

    /// Serve an entry up to `window` past its freshness (`Cache-Status:
    /// …; hit; fwd=stale`) while one background request, holding the fill
    /// lease, refreshes it. Default: off. Purged entries are gone, never
    /// served stale.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Builder {
        self.stale_while_revalidate = window;
        self
    }

    /// When the origin answers 5xx or fails, serve an entry up to `window`
    /// past its freshness instead (`Cache-Status: …; hit; fwd=stale;
    /// detail=stale-if-error`). Default: off.
    pub fn stale_if_error(mut self, window: Duration) -> Builder {
        self.stale_if_error = window;
        self
    }

    /// Shortens each stored TTL by a random fraction of at most `fraction`
    /// (0 to 1; default 0), so that entries written together do not expire
    /// together.
    pub fn ttl_jitter(mut self, fraction: f64) -> Builder {
        self.ttl_jitter = fraction;
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

    /// The circuit breaker: after `failures` consecutive store errors or
    /// timeouts, requests skip the store for `cool_down` (`Cache-Status:
    /// …; fwd=bypass; detail=store-unavailable`), then one probe decides
    /// whether it closes. Default: 5 failures, 2 s. `failures` 0 turns it
    /// off.
    pub fn circuit_breaker(mut self, failures: u32, cool_down: Duration) -> Builder {
        self.breaker = (failures, cool_down);
        self
    }

    /// Test-only: write fills without checking that their lease still
    /// holds. This breaks the guarantee that no fill begun before a purge
    /// survives it; it exists so that tests can show the race fencing
    /// closes.
    #[doc(hidden)]
    pub fn unfenced_fills_for_tests(mut self) -> Builder {
        self.fencing = false;
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
        check_prefix(&self.prefix)?;
        if self.ttl.is_zero() || self.negative_ttl.is_zero() {
            return Err(Error::InvalidConfig("a ttl of zero stores nothing".into()));
        }
        if self.store_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "store_timeout must be above zero".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return Err(Error::InvalidConfig(format!(
                "ttl_jitter is a fraction from 0 to 1, not {}",
                self.ttl_jitter
            )));
        }
        if self.decoded_heads > crate::heads::MAX_HEADS {
            return Err(Error::InvalidConfig(format!(
                "decoded_heads is at most {}, not {}",
                crate::heads::MAX_HEADS,
                self.decoded_heads
            )));
        }
        if u32::try_from(self.max_body_bytes).is_err() {
            return Err(Error::InvalidConfig(
                "max_body_bytes must fit in 32 bits".into(),
            ));
        }
        let mut routes = matchit::Router::new();
        for (template, route) in &self.routes {
            if !template.starts_with('/') {
                return Err(Error::InvalidRoute {
                    template: template.clone(),
                    reason: "a template starts with `/`".into(),
                });
            }
            if matches!(route.ttl, Some(t) if t.is_zero())
                || matches!(route.negative_ttl, Some(t) if t.is_zero())
            {
                return Err(Error::InvalidRoute {
                    template: template.clone(),
                    reason: "a ttl of zero stores nothing; use Route::bypass()".into(),
                });
            }
            routes
                .insert(template.clone(), route.clone())
                .map_err(|e| Error::InvalidRoute {
                    template: template.clone(),
                    reason: e.to_string(),
                })?;
        }
        let mut purge_rules = PurgeRules::default();
        for (method, template, targets) in &self.purge_rules {
            purge_rules.add(method.clone(), template, targets)?;
        }
        Ok(self.assemble(routes, purge_rules))
    }

    fn assemble(self, routes: matchit::Router<Route>, purge_rules: PurgeRules) -> CacheAsideLayer {
        CacheAsideLayer {
            config: Arc::new(Config {
                timed: crate::breaker::Timed::new(&self.store, self.store_timeout),
                store: self.store,
                keys: KeyConfig {
                    prefix: Arc::from(self.prefix),
                    include_authority: self.include_authority,
                    query: self.query,
                    vary_by: self.vary_by,
                },
                policy: PolicyConfig {
                    ttl: self.ttl,
                    negative_ttl: self.negative_ttl,
                    statuses: self.statuses,
                    max_body_bytes: self.max_body_bytes,
                },
                store_timeout: self.store_timeout,
                purge_timeout: self.purge_timeout,
                lease_ttl: self.lease_ttl,
                fill_wait: self.fill_wait,
                stale_while_revalidate: self.stale_while_revalidate,
                stale_if_error: self.stale_if_error,
                ttl_jitter: self.ttl_jitter,
                fencing: self.fencing,
                pending: Pending::default(),
                breaker: Breaker::new(self.breaker.0, self.breaker.1),
                heads: crate::heads::Heads::with_capacity(self.decoded_heads),
                routes,
                purge_rules,
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
    fn decoded_heads_are_bounded_at_build() {
        let heads = |entries| {
            CacheAsideLayer::builder(MemoryStore::new())
                .decoded_heads(entries)
                .build()
        };
        assert_eq!(heads(0).unwrap().config.heads.capacity(), 0);
        assert_eq!(heads(100).unwrap().config.heads.capacity(), 128);
        assert_eq!(
            CacheAsideLayer::new(MemoryStore::new())
                .config
                .heads
                .capacity(),
            2048
        );
        assert!(heads(crate::heads::MAX_HEADS).is_ok());
        let err = heads(crate::heads::MAX_HEADS + 1).unwrap_err();
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
        assert!(layer.config.route("/users/me").unwrap().is_bypass());
        assert_eq!(
            layer.config.route("/users/7").unwrap().ttls().0,
            Some(Duration::from_secs(5))
        );
        assert!(layer.config.route("/teams").is_none());
    }
}
