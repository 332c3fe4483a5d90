//! Purges: what a successful write makes stale, the declared purge rules,
//! the [`Purger`] handle, and what happens when a purge fails.
//!
//! A request with an unsafe method (anything but GET, HEAD, OPTIONS and
//! TRACE) answered with 2xx or 3xx purges, before its response is returned:
//!
//! - its own path, every variant (RFC 9111 section 4.4);
//! - the paths of its response's `Location` and `Content-Location`, when
//!   they are on the request's authority;
//! - the targets of the purge rules that match its method and path, with
//!   the path parameters substituted.
//!
//! An exact path is purged as one resource (every variant), in O(variants);
//! a target with a `*` is a pattern, purged by `SCAN` in bounded batches.
//!
//! # When a purge fails
//!
//! The mutating response is still returned, unchanged (the write did
//! happen), with `Cache-Status: …; detail=purge-failed`. The failed targets
//! are kept in a bounded in-process queue and retried in the background with
//! back-off until the store takes them. Until then, this instance does not
//! serve the affected paths from the cache, so its own clients read their
//! writes. Other instances can serve such an entry at most until the retry
//! succeeds or the entry's TTL ends, whichever is first: a failed purge never
//! extends how long stale data can live beyond the TTL.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderMap, Method, StatusCode};

use crate::key::{KeyConfig, ResourceKey, ResourcePattern};
use crate::layer::Config;
use crate::Error;

/// Failed purges kept for retry, at most; past this, the oldest are dropped
/// (their entries then live at most until their TTL).
const MAX_PENDING: usize = 4096;
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Deadline of a purge retried in the background. A pattern purge scans
/// the keyspace (about 1 µs a key), which can outlast `purge_timeout` in a
/// large one; in the background nobody waits on it, so it gets room to
/// finish.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// One thing to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purge {
    Resource(ResourceKey),
    Pattern(ResourcePattern),
}

impl Purge {
    /// Whether this purge covers the resource.
    fn covers(&self, resource: &ResourceKey) -> bool {
        match self {
            Purge::Resource(r) => r == resource,
            Purge::Pattern(p) => p.prefix() == resource.prefix() && p.matches(resource.resource()),
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Param(String),
    Wildcard,
}

/// A parsed purge target, such as `/users/{id}` or `/teams/*/members`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pieces: Vec<Piece>,
}

impl Target {
    /// Parses `text`; every `{name}` must be one of `params`.
    fn parse(text: &str, params: &[String]) -> Result<Target, String> {
        if !text.starts_with('/') {
            return Err(format!("target `{text}` does not start with `/`"));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("target `{text}` has an unclosed `{{`"));
                    }
                    let name = name.trim_start_matches('*');
                    if name.is_empty() {
                        return Err(format!("target `{text}` has an empty or unclosed `{{}}`"));
                    }
                    if !params.iter().any(|p| p == name) {
                        return Err(format!(
                            "target `{text}` uses `{{{name}}}`, which the rule's template does not capture"
                        ));
                    }
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    pieces.push(Piece::Param(name.to_owned()));
                }
                '}' => return Err(format!("target `{text}` has a `}}` without `{{`")),
                '*' => {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    pieces.push(Piece::Wildcard);
                }
                c => literal.push(c),
            }
        }
        pieces.push(Piece::Literal(literal));
        pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));
        Ok(Target { pieces })
    }

    /// The purge for one request: parameters substituted from `params`.
    fn render(&self, keys: &KeyConfig, params: &matchit::Params<'_, '_>) -> Purge {
        let value = |piece: &Piece| -> Option<String> {
            match piece {
                Piece::Literal(text) => Some(text.clone()),
                Piece::Param(name) => Some(params.get(name).unwrap_or_default().to_owned()),
                Piece::Wildcard => None,
            }
        };
        if self.pieces.iter().any(|p| matches!(p, Piece::Wildcard)) {
            let values: Vec<Option<String>> = self.pieces.iter().map(value).collect();
            Purge::Pattern(keys.resource_pattern(values.iter().map(|v| v.as_deref())))
        } else {
            let path: String = self.pieces.iter().filter_map(value).collect();
            Purge::Resource(keys.resource_key(&path))
        }
    }
}

/// The declared purge rules, by method.
#[derive(Default)]
pub(crate) struct PurgeRules {
    by_method: Vec<(Method, matchit::Router<Vec<Target>>)>,
}

impl std::fmt::Debug for PurgeRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_method.iter().map(|(m, _)| m))
            .finish()
    }
}

impl PurgeRules {
    /// Adds a rule; fails on a bad template, a bad target or a duplicate.
    pub(crate) fn add(
        &mut self,
        method: Method,
        template: &str,
        targets: &[String],
    ) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidRoute {
            template: template.to_owned(),
            reason,
        };
        if !template.starts_with('/') {
            return Err(invalid("a template starts with `/`".into()));
        }
        let params = template_params(template);
        let targets = targets
            .iter()
            .map(|t| Target::parse(t, &params))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let index = match self.by_method.iter().position(|(m, _)| *m == method) {
            Some(index) => index,
            None => {
                self.by_method
                    .push((method.clone(), matchit::Router::new()));
                self.by_method.len() - 1
            }
        };
        self.by_method[index]
            .1
            .insert(template, targets)
            .map_err(|e| invalid(format!("purge rule for {method}: {e}")))
    }

    /// The rule targets for a request, rendered.
    pub(crate) fn targets(&self, keys: &KeyConfig, method: &Method, path: &str) -> Vec<Purge> {
        let Some((_, router)) = self.by_method.iter().find(|(m, _)| m == method) else {
            return Vec::new();
        };
        match router.at(path) {
            Ok(matched) => matched
                .value
                .iter()
                .map(|t| t.render(keys, &matched.params))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Names of the parameters a template captures (`{id}`, `{*rest}`).
fn template_params(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}'))
        .map(|(name, _)| name.trim_start_matches('*').to_owned())
        .collect()
}

/// Whether a method is safe (RFC 9110 section 9.2.1): only unsafe methods
/// purge.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a response to an unsafe request purges: 2xx and 3xx do.
pub(crate) fn purges_on(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// The paths of `Location` and `Content-Location` that are on the request's
/// authority, resolved against the request path.
pub(crate) fn location_paths(
    headers: &HeaderMap,
    request_authority: &str,
    request_path: &str,
) -> Vec<String> {
    let mut paths = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let value = value.trim();
        // Drop the fragment and the query: a purge covers every query.
        let value = value.split(['#', '?']).next().unwrap_or("");
        // An absolute URI (`https://host/path`) or a network-path
        // reference (`//host/path`): only on the request's authority.
        let remote = value
            .split_once("://")
            .map(|(_scheme, rest)| rest)
            .or_else(|| value.strip_prefix("//"));
        let path = if let Some(rest) = remote {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if !authority.eq_ignore_ascii_case(request_authority) {
                continue;
            }
            if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            }
        } else if value.starts_with('/') {
            value.to_owned()
        } else if value.is_empty() {
            continue;
        } else {
            // A relative reference: resolve against the request's directory.
            let dir = request_path.rfind('/').map_or("/", |i| &request_path[..=i]);
            format!("{dir}{value}")
        };
        paths.push(remove_dot_segments(&path));
    }
    paths
}

/// Removes `.` and `..` segments from an absolute path (RFC 3986 section
/// 5.2.4), as clients do before they send it.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let trailing_dot = matches!(segments.last(), Some(&".") | Some(&".."));
    for segment in segments {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            segment => out.push(segment),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing_dot && !result.ends_with('/') {
        result.push('/');
    }
    result
}

/// What a set of purges did.
#[derive(Debug, Default)]
pub(crate) struct PurgeReport {
    pub(crate) removed: u64,
    pub(crate) failed: Vec<Purge>,
}

/// Runs one purge under `timeout`; a timeout is an [`Error::Timeout`].
async fn run_one(config: &Config, purge: &Purge, timeout: Duration) -> Result<u64, Error> {
    // While the breaker is open the purge fails at once (it is retried).
    if config.breaker.cooling() {
        return Err(Error::Unavailable);
    }
    let call = match purge {
        Purge::Resource(r) => config.store.purge_resource(r),
        Purge::Pattern(p) => config.store.purge_pattern(p),
    };
    let result = tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(Error::Timeout(timeout)));
    config.breaker.record(&result);
    if let Err(error) = &result {
        tracing::warn!(target: "tower_cache_aside", %error, ?purge, "purge failed");
    }
    result
}

/// Runs purges concurrently, each under `timeout`.
pub(crate) async fn run(config: &Config, purges: Vec<Purge>, timeout: Duration) -> PurgeReport {
    let calls = purges.into_iter().map(|purge| async move {
        let result = run_one(config, &purge, timeout).await;
        (purge, result)
    });
    let mut report = PurgeReport::default();
    for (purge, result) in futures_util::future::join_all(calls).await {
        match result {
            Ok(removed) => report.removed += removed,
            Err(_) => report.failed.push(purge),
        }
    }
    report
}

/// Purges that failed, kept until the store takes them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Each purge with the count of the failure that put it there: a retry
    /// removes a purge only if it did not fail again meanwhile.
    purges: Mutex<Vec<(Purge, u64)>>,
    failures: AtomicU64,
    /// Length of `purges`, readable without the lock on the hot path.
    len: AtomicUsize,
    retrying: AtomicBool,
}

impl Pending {
    /// Whether a failed purge still covers this resource; hits for it are
    /// not served meanwhile.
    pub(crate) fn covers(&self, resource: &ResourceKey) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.purges
            .lock()
            .map(|purges| purges.iter().any(|(p, _)| p.covers(resource)))
            // A poisoned lock: be safe, do not serve from the cache.
            .unwrap_or(true)
    }

    fn push(&self, failed: Vec<Purge>) {
        let Ok(mut purges) = self.purges.lock() else {
            return;
        };
        for purge in failed {
            let failure = self.failures.fetch_add(1, Ordering::Relaxed);
            match purges.iter_mut().find(|(p, _)| *p == purge) {
                Some(pending) => pending.1 = failure,
                None => purges.push((purge, failure)),
            }
        }
        if purges.len() > MAX_PENDING {
            let excess = purges.len() - MAX_PENDING;
            tracing::error!(target: "tower_cache_aside", dropped = excess, "too many failed purges; the oldest now expire by TTL only");
            purges.drain(..excess);
        }
        self.len.store(purges.len(), Ordering::Release);
    }

    /// A copy of the pending purges; they stay pending (and keep fencing)
    /// until [`Pending::done`] removes those that succeeded.
    fn snapshot(&self) -> Vec<(Purge, u64)> {
        self.purges
            .lock()
            .map(|purges| purges.clone())
            .unwrap_or_default()
    }

    /// Removes purges that have now succeeded, unless they failed again
    /// since the snapshot was taken.
    fn done(&self, succeeded: &[(Purge, u64)]) {
        let Ok(mut purges) = self.purges.lock() else {
            return;
        };
        purges.retain(|pending| !succeeded.contains(pending));
        self.len.store(purges.len(), Ordering::Release);
    }
}

/// Records failed purges and makes sure a retry task runs.
pub(crate) fn retry_later(config: &Arc<Config>, failed: Vec<Purge>) {
    if failed.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Nothing could retry it: fencing the paths would fence them for
        // good, so the entries are left to their TTL.
        tracing::error!(target: "tower_cache_aside", "a purge failed outside a Tokio runtime; its entries expire by TTL only");
        return;
    };
    config.pending.push(failed);
    if config.pending.retrying.swap(true, Ordering::AcqRel) {
        return;
    }
    // The task holds a weak reference: it ends with the layer.
    let weak = Arc::downgrade(config);
    runtime.spawn(async move {
        let mut delay = RETRY_MIN;
        loop {
            tokio::time::sleep(delay).await;
            let Some(config) = weak.upgrade() else { return };
            // The purges stay pending (fencing their paths) while they run.
            let snapshot = config.pending.snapshot();
            let purges = snapshot.iter().map(|(p, _)| p.clone()).collect();
            let timeout = config.purge_timeout.max(RETRY_TIMEOUT);
            let report = run(&config, purges, timeout).await;
            let succeeded: Vec<(Purge, u64)> = snapshot
                .into_iter()
                .filter(|(p, _)| !report.failed.contains(p))
                .collect();
            config.pending.done(&succeeded);
            if report.failed.is_empty() {
                tracing::info!(target: "tower_cache_aside", removed = report.removed, "failed purges retried");
                config.pending.retrying.store(false, Ordering::Release);
                // A purge may have failed meanwhile: look once more.
                if config.pending.len.load(Ordering::Acquire) == 0
                    || config.pending.retrying.swap(true, Ordering::AcqRel)
                {
                    return;
                }
                delay = RETRY_MIN;
            } else {
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    });
}

/// A handle to purge cached responses from outside a request: jobs,
/// handlers, admin endpoints. Cheap to clone.
///
/// ```
/// # async fn run() -> Result<(), tower_cache_aside::Error> {
/// use http::Method;
/// use tower_cache_aside::{CacheAsideLayer, MemoryStore};
///
/// let layer = CacheAsideLayer::builder(MemoryStore::new())
///     .purge_on(Method::PUT, "/users/{id}", ["/users/{id}", "/users"])
///     .build()?;
/// let purger = layer.purger();
///
/// purger.purge_path("/users/7").await?;               // one resource, every variant
/// purger.purge_glob("/users/*").await?;               // a pattern
/// purger.purge_for(&Method::PUT, "/users/7").await?;  // what a PUT would purge
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Purger {
    config: Arc<Config>,
}

impl Purger {
    pub(crate) fn new(config: Arc<Config>) -> Purger {
        Purger { config }
    }

    /// Purges every cached variant (host, query, headers) of `path`, as it
    /// appears in request targets (percent-encoded). Returns how many
    /// entries were removed.
    pub async fn purge_path(&self, path: &str) -> Result<u64, Error> {
        let resource = self.config.keys.resource_key(path);
        self.one(Purge::Resource(resource)).await
    }

    /// Purges every path that matches `glob`, where `*` matches any run of
    /// characters (`/` included) and every other character is literal.
    pub async fn purge_glob(&self, glob: &str) -> Result<u64, Error> {
        let pieces: Vec<&str> = glob.split('*').collect();
        let mut parts = Vec::with_capacity(pieces.len() * 2);
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                parts.push(None);
            }
            parts.push(Some(*piece));
        }
        let pattern = self.config.keys.resource_pattern(parts);
        self.one(Purge::Pattern(pattern)).await
    }

    /// Purges what a successful `method` request to `path` would: the path
    /// itself and the targets of the matching purge rules.
    pub async fn purge_for(&self, method: &Method, path: &str) -> Result<u64, Error> {
        let purges = self.config.purges_for(method, path);
        let report = run(&self.config, purges, self.config.purge_timeout).await;
        match report.failed.first() {
            None => Ok(report.removed),
            Some(_) => {
                retry_later(&self.config, report.failed);
                Err(Error::PurgeFailed)
            }
        }
    }

    async fn one(&self, purge: Purge) -> Result<u64, Error> {
        let result = run_one(&self.config, &purge, self.config.purge_timeout).await;
        if result.is_err() {
            retry_later(&self.config, vec![purge]);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("t:"),
            include_authority: true,
            query: crate::key::QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    fn rules(method: Method, template: &str, targets: &[&str]) -> Result<PurgeRules, Error> {
        let mut rules = PurgeRules::default();
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        rules.add(method, template, &targets)?;
        Ok(rules)
    }

    fn resource(path: &str) -> Purge {
        Purge::Resource(keys().resource_key(path))
    }

    #[test]
    fn parameters_are_substituted_into_targets() {
        let rules = rules(
            Method::PUT,
            "/users/{id}",
            &["/users/{id}", "/users", "/teams/*/members"],
        )
        .unwrap();
        let purges = rules.targets(&keys(), &Method::PUT, "/users/42");
        assert_eq!(purges[0], resource("/users/42"));
        assert_eq!(purges[1], resource("/users"));
        assert!(matches!(&purges[2], Purge::Pattern(p) if p.pattern() == "/teams/*/members"));
        assert!(rules
            .targets(&keys(), &Method::POST, "/users/42")
            .is_empty());
        assert!(rules.targets(&keys(), &Method::PUT, "/teams/1").is_empty());
    }

    #[test]
    fn request_text_cannot_widen_a_pattern() {
        let rules = rules(Method::DELETE, "/users/{id}", &["/users/{id}/*"]).unwrap();
        let purges = rules.targets(&keys(), &Method::DELETE, "/users/*");
        assert!(matches!(&purges[0], Purge::Pattern(p) if p.pattern() == "/users/%2A/*"));
        let rules2 = PurgeRules::default();
        assert!(rules2.targets(&keys(), &Method::DELETE, "/x").is_empty());
    }

    #[test]
    fn bad_rules_fail_at_build() {
        assert!(rules(Method::PUT, "/users/{id}", &["/users/{name}"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["users"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["/users/{id"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["/users/id}"]).is_err());
        assert!(rules(Method::PUT, "users/{id}", &["/users"]).is_err());
        let mut twice = rules(Method::PUT, "/users/{id}", &["/users"]).unwrap();
        assert!(twice
            .add(Method::PUT, "/users/{id}", &["/x".into()])
            .is_err());
        assert!(twice
            .add(Method::POST, "/users/{id}", &["/x".into()])
            .is_ok());
    }

    #[test]
    fn catch_all_parameters_substitute_too() {
        let rules = rules(
            Method::POST,
            "/files/{*path}",
            &["/files/{path}", "/index/{*path}"],
        )
        .unwrap();
        let purges = rules.targets(&keys(), &Method::POST, "/files/a/b.txt");
        assert_eq!(
            purges,
            vec![resource("/files/a/b.txt"), resource("/index/a/b.txt")]
        );
    }

    #[test]
    fn locations_on_the_same_authority_are_resolved() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/users/3"));
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("https://EXAMPLE.com/users/3?x=1"),
        );
        assert_eq!(
            location_paths(&headers, "example.com", "/users"),
            ["/users/3", "/users/3"]
        );
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("https://other.example/users/3"),
        );
        headers.insert(header::CONTENT_LOCATION, HeaderValue::from_static("4"));
        assert_eq!(
            location_paths(&headers, "example.com", "/users/"),
            ["/users/4"]
        );
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(remove_dot_segments("/users/./5"), "/users/5");
        assert_eq!(
            remove_dot_segments("/users/new/../teams/1"),
            "/users/teams/1"
        );
        assert_eq!(remove_dot_segments("/a/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
        assert_eq!(remove_dot_segments("/a//b"), "/a//b");
    }

    #[test]
    fn only_unsafe_methods_with_success_or_redirect_purge() {
        assert!(is_safe(&Method::GET) && is_safe(&Method::OPTIONS));
        assert!(!is_safe(&Method::POST) && !is_safe(&Method::from_bytes(b"PURGE").unwrap()));
        assert!(purges_on(StatusCode::NO_CONTENT) && purges_on(StatusCode::SEE_OTHER));
        assert!(!purges_on(StatusCode::NOT_FOUND) && !purges_on(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
