//! The layer's settings, validated by the [`Builder`](crate::Builder): no
//! runtime state here (the breaker lives with the guarded store, failed
//! purges with [`Purges`](crate::purge::Purges), decoded heads in the
//! [`HeadCache`](super::head_cache::HeadCache)). Defaults are in
//! [`crate::settings`].

use std::time::Duration;

use crate::http::policy::{Freshness, PolicyConfig, RouteRules};
use crate::key::KeyConfig;

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
    max_variants: Option<usize>,
    freshness: Option<Freshness>,
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

    /// The most entries one of this route's resources may hold (see
    /// [`Builder::max_variants`](crate::Builder::max_variants)): more for
    /// a search page, fewer for a path that should have one.
    pub fn max_variants(mut self, max: usize) -> Route {
        self.max_variants = Some(max);
        self
    }

    /// Where this route's freshness lifetimes come from (see
    /// [`Builder::freshness`](crate::Builder::freshness)); its TTLs are
    /// then the upper bounds.
    pub fn freshness(mut self, freshness: Freshness) -> Route {
        self.freshness = Some(freshness);
        self
    }

    /// The route's bound on variants, where set.
    pub(crate) fn variants(&self) -> Option<usize> {
        self.max_variants
    }

    /// What the route sets for storing its responses.
    pub(crate) fn rules(&self) -> RouteRules {
        RouteRules {
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
            freshness: self.freshness,
        }
    }

    /// Whether the route is never cached.
    pub(crate) fn is_bypass(&self) -> bool {
        self.bypass
    }

    /// Why the route cannot work, if it cannot.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let zero = |ttl: Option<Duration>| ttl.is_some_and(|t| t.is_zero());
        if zero(self.ttl) || zero(self.negative_ttl) {
            return Err("a ttl of zero stores nothing; use Route::bypass()");
        }
        if self.max_variants == Some(0) {
            return Err("max_variants of zero stores nothing; use Route::bypass()");
        }
        Ok(())
    }
}

/// The layer's settings.
pub(crate) struct Config {
    pub(crate) keys: KeyConfig,
    pub(crate) policy: PolicyConfig,
    pub(crate) ttl_jitter: f64,
    pub(crate) max_variants: usize,
    pub(crate) routes: matchit::Router<Route>,
}

impl Config {
    /// The rules for a request path: the matching route's, or the defaults.
    /// Matched in the path's RFC 3986 normal form, so that `/%61dmin`
    /// meets the rules of `/admin`.
    pub(crate) fn route(&self, path: &str) -> Option<&Route> {
        self.routes
            .at(&crate::key::route_form(path))
            .ok()
            .map(|m| m.value)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("ttl_jitter", &self.ttl_jitter)
            .field("max_variants", &self.max_variants)
            .finish_non_exhaustive()
    }
}
