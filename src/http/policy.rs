//! What may be stored, and for how long.
//!
//! A shared cache that stores something private leaks it to every other
//! user, so every rule here errs towards passing through: a request or a
//! response that might be personal, or whose caching rules cannot be read,
//! goes to the origin and is not stored.
//!
//! Requests are checked before any store call ([`request_bypass`]),
//! responses when the inner service answers ([`PolicyConfig::storable`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderName, Request, StatusCode};

use crate::key::VaryNames;
use crate::util::time::StaleWindows;

/// Where a stored response's freshness lifetime comes from: the layer's
/// settings, or what the response says (RFC 9111 section 4.2.1). Set for
/// the layer with [`Builder::freshness`](crate::Builder::freshness) and
/// for a route with [`Route::freshness`](crate::Route::freshness).
///
/// ```
/// use std::time::Duration;
/// use tower_cache_aside::{CacheAsideLayer, Freshness, MemoryStore, Route};
///
/// // The app owns its routes, but /upstream/* relays a service that says
/// // what is fresh: stored only as long as it says (or, without a word,
/// // a tenth of its Last-Modified age), at most 10 minutes.
/// let layer = CacheAsideLayer::builder(MemoryStore::new())
///     .route(
///         "/upstream/{*rest}",
///         Route::new().freshness(Freshness::Heuristic).ttl(Duration::from_secs(600)),
///     )
///     .build()?;
/// # Ok::<(), tower_cache_aside::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Freshness {
    /// Every storable response whose status is in
    /// [`statuses`](crate::Builder::statuses) is stored for the TTL; its
    /// own `s-maxage`, `max-age` or `Expires` can only shorten that. For an
    /// app that owns its routes and writes its `Cache-Control` for
    /// browsers, or not at all. The default.
    #[default]
    Configured,
    /// Only a response with explicit freshness (`s-maxage`, `max-age` or
    /// `Expires`) is stored, for that long, at most the TTL; one without is
    /// forwarded (`detail=no-freshness`). Its status need not be in
    /// `statuses` (RFC 9111 section 3), but a 206 or a 304 is never
    /// stored. For a service that says what is fresh.
    Explicit,
    /// As [`Explicit`](Freshness::Explicit), and a response without
    /// explicit freshness but with a `Last-Modified` is fresh for a tenth
    /// of the time since it was modified (RFC 9111 section 4.2.2), at most
    /// the TTL, if its status is both in `statuses` and heuristically
    /// cacheable (RFC 9110 section 15.1).
    Heuristic,
}

/// A targeted cache-control field (RFC 9213) the layer obeys ahead of
/// `Cache-Control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetedField {
    pub(crate) name: HeaderName,
    /// Whether it names this layer alone, and so is removed from
    /// responses before they are stored or sent.
    pub(crate) own: bool,
}

/// The storage part of the layer's configuration.
#[derive(Debug, Clone)]
pub(crate) struct PolicyConfig {
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body_bytes: usize,
    pub(crate) freshness: Freshness,
    /// In the order they are obeyed: the first present and valid wins.
    pub(crate) targeted: Vec<TargetedField>,
    /// The layer's stale windows.
    pub(crate) stale: StaleWindows,
    /// Whether a response's own `stale-while-revalidate` and
    /// `stale-if-error` may open windows the layer's settings keep shut.
    pub(crate) stale_from_response: bool,
    /// How long past its freshness (and stale windows) an entry with a
    /// validator is kept, to be revalidated with the inner service rather
    /// than fetched whole. Zero: not kept, and `no-cache` is not stored.
    pub(crate) revalidation_window: Duration,
}

/// What the route a request matched sets, where it sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteRules {
    pub(crate) ttl: Option<Duration>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) freshness: Option<Freshness>,
}

/// When the layer sent the request to the inner service and when the
/// response came back, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) requested_ms: u64,
    pub(crate) received_ms: u64,
}

/// How a response that may be stored is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storable {
    /// Its freshness lifetime, counted from when the origin made it.
    pub(crate) lifetime: Duration,
    /// Its age when it arrived (RFC 9111 section 4.2.3), below `lifetime`.
    pub(crate) age: Duration,
    /// Its own stale windows, where they are not the layer's.
    pub(crate) stale: Option<StaleWindows>,
    /// The request fields its `Vary` names past the configured ones: it is
    /// stored under the variant their values give.
    pub(crate) vary: Option<VaryNames>,
}

impl Storable {
    /// How long it stays fresh from its arrival.
    pub(crate) fn resident(&self) -> Duration {
        self.lifetime.saturating_sub(self.age)
    }
}

/// The longest stale window a response's own directive can open.
pub(crate) const MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// The statuses RFC 9110 section 15.1 makes heuristically cacheable.
const HEURISTIC_STATUSES: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Why a request skips the cache, as a `Cache-Status` detail, or `None` when
/// it may be looked up. `vary_by` is the configured key headers: keying on
/// `Authorization` or `Cookie` is an explicit opt-in that makes those
/// requests cacheable, one entry per credential.
pub(crate) fn request_bypass<B>(req: &Request<B>, vary_by: &[HeaderName]) -> Option<&'static str> {
    // One pass over the request's field names (most requests carry a
    // handful), rather than a hashed look-up for each field that matters;
    // the reasons are then given in a fixed order.
    let (mut authorization, mut cookie, mut range, mut upgrade) = (false, false, false, false);
    for name in req.headers().keys() {
        if name == header::AUTHORIZATION {
            authorization = true;
        } else if name == header::COOKIE {
            cookie = true;
        } else if name == header::RANGE {
            range = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
    }
    let keyed = |name: &HeaderName| vary_by.iter().any(|v| v == name);
    if authorization && !keyed(&header::AUTHORIZATION) {
        return Some("authorization");
    }
    if cookie && !keyed(&header::COOKIE) {
        return Some("cookie");
    }
    if range {
        return Some("range");
    }
    if upgrade {
        return Some("upgrade");
    }
    None
}

impl PolicyConfig {
    /// Decides whether a response may be stored, and how: `Err(detail)`
    /// when it may not.
    ///
    /// `route` holds what the matched route overrides. In the
    /// [`Configured`](Freshness::Configured) way the response's own
    /// `s-maxage`, `max-age` or `Expires` can only shorten the TTL; in the
    /// others they are the lifetime, capped by it. Either way the
    /// response's age when it arrived counts against its lifetime.
    pub(crate) fn storable(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        vary_by: &[HeaderName],
        route: RouteRules,
        exchange: Exchange,
    ) -> Result<Storable, &'static str> {
        let freshness = route.freshness.unwrap_or(self.freshness);
        let listed = self.statuses.contains(&status);
        if freshness == Freshness::Configured && !listed {
            return Err("status");
        }
        if headers.contains_key(header::SET_COOKIE) {
            return Err("set-cookie");
        }
        let (cc, reads_expires) = self.directives(headers);
        if cc.no_store {
            return Err("no-store");
        }
        if cc.private {
            return Err("private");
        }
        // `no-cache`: stored only to be revalidated before every use, so
        // only with a validator and a window to keep it in.
        let revalidate_always = cc.no_cache;
        if revalidate_always
            && (self.revalidation_window.is_zero() || !has_validator(status, headers))
        {
            return Err("no-cache");
        }
        let vary = VaryNames::of_response(headers, vary_by)?;
        if let Some(len) = content_length(headers) {
            if len > self.max_body_bytes as u64 {
                return Err("too-large");
            }
        }
        if revalidate_always {
            return Ok(Storable {
                lifetime: Duration::ZERO,
                age: initial_age(headers, exchange),
                stale: Some(StaleWindows::NONE).filter(|none| *none != self.stale),
                vary,
            });
        }

        let negative = status == StatusCode::NOT_FOUND || status == StatusCode::GONE;
        let cap = if negative {
            route.negative_ttl.unwrap_or(self.negative_ttl)
        } else {
            route.ttl.unwrap_or(self.ttl)
        };
        let explicit = match cc.s_maxage.or(cc.max_age) {
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None if reads_expires => expires_in(headers),
            None => None,
        };
        let lifetime = match (freshness, explicit) {
            (Freshness::Configured, explicit) => explicit.map_or(cap, |e| e.min(cap)),
            (_, Some(explicit)) => {
                // A partial response answers a range, a 304 a condition:
                // neither is a whole response to replay.
                if status.as_u16() < 200
                    || status == StatusCode::PARTIAL_CONTENT
                    || status == StatusCode::NOT_MODIFIED
                {
                    return Err("status");
                }
                explicit.min(cap)
            }
            (Freshness::Heuristic, None) => {
                if !listed
                    || status == StatusCode::PARTIAL_CONTENT
                    || !HEURISTIC_STATUSES.contains(&status.as_u16())
                {
                    return Err("status");
                }
                heuristic_lifetime(headers, exchange.received_ms)
                    .ok_or("no-freshness")?
                    .min(cap)
            }
            (_, None) => return Err("no-freshness"),
        };
        let age = initial_age(headers, exchange);
        if lifetime <= age {
            return Err("expired");
        }
        let stale = self.stale_windows(&cc);
        Ok(Storable {
            lifetime,
            age,
            stale: (stale != self.stale).then_some(stale),
            vary,
        })
    }

    /// The directives the layer obeys: those of the first targeted field
    /// present and valid, else `Cache-Control`'s (RFC 9213 section 2.2).
    /// `Expires` is read only with `Cache-Control`: a targeted field
    /// replaces both.
    fn directives(&self, headers: &HeaderMap) -> (CacheControl, bool) {
        for field in &self.targeted {
            if let Some(cc) = CacheControl::parse_targeted(headers, &field.name) {
                return (cc, false);
            }
        }
        (CacheControl::parse(headers), true)
    }

    /// How long the response may be served stale. `must-revalidate`,
    /// `proxy-revalidate` and `no-cache` forbid it (RFC 9111 section
    /// 4.2.4), and so does `s-maxage`, which implies `proxy-revalidate`
    /// in a shared cache, unless the response also grants a window of its
    /// own. A response's `stale-while-revalidate=N` and `stale-if-error=N`
    /// (RFC 5861) shorten the layer's windows to N seconds, or, with
    /// [`stale_from_response`](Self::stale_from_response), set them to N,
    /// at most [`MAX_STALE`].
    pub(crate) fn stale_windows(&self, cc: &CacheControl) -> StaleWindows {
        if cc.must_revalidate || cc.proxy_revalidate || cc.no_cache {
            return StaleWindows::NONE;
        }
        let implied_revalidate = cc.s_maxage.is_some();
        let window = |layer: Duration, own: Option<u64>| match own {
            None if implied_revalidate => Duration::ZERO,
            None => layer,
            Some(seconds) => {
                let own = Duration::from_secs(seconds).min(MAX_STALE);
                if self.stale_from_response {
                    own
                } else {
                    own.min(layer)
                }
            }
        };
        StaleWindows {
            while_revalidate: window(self.stale.while_revalidate, cc.stale_while_revalidate),
            if_error: window(self.stale.if_error, cc.stale_if_error),
        }
    }

    /// How long the store keeps an entry past its freshness: its longest
    /// stale window, or the revalidation window for one with a validator.
    pub(crate) fn grace(
        &self,
        storable: &Storable,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Duration {
        let windows = storable.stale.unwrap_or(self.stale).longest();
        if has_validator(status, headers) {
            windows.max(self.revalidation_window)
        } else {
            windows
        }
    }

    /// Removes the targeted fields that name this layer alone.
    pub(crate) fn strip_own_fields(&self, headers: &mut HeaderMap) {
        for field in self.targeted.iter().filter(|f| f.own) {
            headers.remove(&field.name);
        }
    }
}

#[cfg(test)]
impl PolicyConfig {
    /// A TTL of 60 s, a negative one of 5 s, the default statuses, a
    /// 1 KiB body cap and nothing else.
    pub(crate) fn for_tests() -> PolicyConfig {
        PolicyConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            statuses: crate::settings::DEFAULT_STATUSES
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            max_body_bytes: 1024,
            freshness: Freshness::Configured,
            targeted: Vec::new(),
            stale: StaleWindows::NONE,
            stale_from_response: false,
            revalidation_window: Duration::ZERO,
        }
    }
}

/// Whether a stored response can be revalidated: a 200 with an `ETag` or a
/// `Last-Modified` (RFC 9110 section 8.8).
pub(crate) fn has_validator(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::OK
        && (headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED))
}

/// The response's age when it arrived, as RFC 9111 section 4.2.3 counts
/// it: the larger of the time since its `Date` (in whole seconds, as
/// `Date` is) and its `Age` plus the time the inner service took.
pub(crate) fn initial_age(headers: &HeaderMap, exchange: Exchange) -> Duration {
    // An unknown request time (0) is no delay rather than 56 years.
    let delay = match exchange.requested_ms {
        0 => 0,
        requested => exchange.received_ms.saturating_sub(requested),
    };
    let corrected = age_field(headers)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(delay);
    // `Date` names a whole second: the response was made by its end at
    // the latest, so that a response of a moment ago has no apparent age.
    let apparent = date_secs(headers).map_or(0, |date| {
        let made_by = date.saturating_mul(1000).saturating_add(999);
        exchange.received_ms.saturating_sub(made_by)
    });
    Duration::from_millis(corrected.max(apparent))
}

/// The `Age` field's seconds (RFC 9111 section 5.1): the first value of
/// the first line; a value past 2^31 counts as 2^31 (section 1.2.2);
/// anything but digits is no `Age` at all.
pub(crate) fn age_field(headers: &HeaderMap) -> Option<u64> {
    const MAX: u64 = 1 << 31;
    let value = headers.get(header::AGE)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits: a parse fails on overflow alone.
    Some(first.parse::<u64>().map_or(MAX, |v| v.min(MAX)))
}

/// `Date`, in seconds since the Unix epoch.
fn date_secs(headers: &HeaderMap) -> Option<u64> {
    let date = httpdate::parse_http_date(headers.get(header::DATE)?.to_str().ok()?).ok()?;
    Some(date.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// A tenth of the time from `Last-Modified` to `Date` (or to the arrival,
/// without a `Date`); `None` without a valid `Last-Modified`.
fn heuristic_lifetime(headers: &HeaderMap, received_ms: u64) -> Option<Duration> {
    let parse = |v: &http::HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    let modified = parse(headers.get(header::LAST_MODIFIED)?)?;
    let base = headers
        .get(header::DATE)
        .and_then(parse)
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_millis(received_ms));
    Some(base.duration_since(modified).unwrap_or(Duration::ZERO) / 10)
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Time left until `Expires`, measured from `Date` when present (so clock
/// skew with the origin does not matter) or from now. An invalid `Expires`
/// means already expired (RFC 9111 section 5.3).
fn expires_in(headers: &HeaderMap) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?;
    let parse = |v: &http::HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    let Some(expires) = parse(expires) else {
        return Some(Duration::ZERO);
    };
    let base = headers
        .get(header::DATE)
        .and_then(parse)
        .unwrap_or_else(SystemTime::now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// The response directives that decide storage and reuse.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// The directives the layer reads, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    NoStore,
    NoCache,
    Private,
    MustRevalidate,
    ProxyRevalidate,
    MaxAge,
    SMaxage,
    StaleWhileRevalidate,
    StaleIfError,
}

impl Directive {
    fn named(name: &str) -> Option<Directive> {
        const NAMES: [(&str, Directive); 9] = [
            ("no-store", Directive::NoStore),
            ("no-cache", Directive::NoCache),
            ("private", Directive::Private),
            ("must-revalidate", Directive::MustRevalidate),
            ("proxy-revalidate", Directive::ProxyRevalidate),
            ("max-age", Directive::MaxAge),
            ("s-maxage", Directive::SMaxage),
            ("stale-while-revalidate", Directive::StaleWhileRevalidate),
            ("stale-if-error", Directive::StaleIfError),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, d)| *d)
    }
}

impl CacheControl {
    /// Reads every `Cache-Control` field line. Unreadable bytes make the
    /// response `no-store`; an unparsable age counts as 0 (RFC 9111
    /// section 4.2.1: a cache treats it as stale), and so does an
    /// unparsable stale window (no window). A directive given twice
    /// counts with its smaller value.
    pub(crate) fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for directive in split_directives(value) {
                let (name, arg) = match directive.split_once('=') {
                    Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let Some(directive) = Directive::named(name) else {
                    continue;
                };
                let seconds = arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                cc.set_age(directive, seconds, true);
            }
        }
        cc
    }

    /// Reads the targeted field `name` (RFC 9213): a Structured Fields
    /// Dictionary (RFC 9651). `None` when it is absent or not a valid
    /// Dictionary, so that the next field, or `Cache-Control`, is obeyed.
    /// A member whose value has the wrong type is ignored; a boolean
    /// directive set to `?0` is off; a repeated member's last value wins.
    pub(crate) fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<CacheControl> {
        let mut lines = headers.get_all(name).iter();
        let first = lines.next()?;
        let joined;
        let bytes = match lines.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut all = [first.as_bytes(), second.as_bytes()].join(&b", "[..]);
                for line in lines {
                    all.extend_from_slice(b", ");
                    all.extend_from_slice(line.as_bytes());
                }
                joined = all;
                &joined[..]
            }
        };
        // An empty field is no field (RFC 9213 section 2.2: the first
        // field with a valid, non-empty value).
        if bytes
            .iter()
            .all(|b| *b == b' ' || *b == b'\t' || *b == b',')
        {
            return None;
        }
        let mut cc = CacheControl::default();
        let mut parser = sfparse::Parser::new(bytes);
        loop {
            let (key, value) = match parser.parse_dict() {
                Ok(Some(member)) => member,
                Ok(None) => break,
                // The parser is not called again after an error.
                Err(_) => return None,
            };
            let Some(directive) = Directive::named(key) else {
                continue;
            };
            match (directive, value) {
                (
                    Directive::MaxAge
                    | Directive::SMaxage
                    | Directive::StaleWhileRevalidate
                    | Directive::StaleIfError,
                    sfparse::Value::Integer(n),
                ) => {
                    if let Ok(seconds) = u64::try_from(n) {
                        cc.set_age(directive, seconds, false);
                    }
                }
                (
                    Directive::MaxAge
                    | Directive::SMaxage
                    | Directive::StaleWhileRevalidate
                    | Directive::StaleIfError,
                    _,
                ) => {}
                (_, sfparse::Value::Bool(on)) => cc.set_flag(directive, on),
                // Any other value (`private="field"`, `no-store=1`) still
                // sets a flag: a shared cache errs towards not storing.
                (_, _) => cc.set_flag(directive, true),
            }
        }
        Some(cc)
    }

    /// Sets a flag directive (an age directive is left as it is).
    fn set_flag(&mut self, directive: Directive, on: bool) {
        match directive {
            Directive::NoStore => self.no_store = on,
            Directive::NoCache => self.no_cache = on,
            Directive::Private => self.private = on,
            Directive::MustRevalidate => self.must_revalidate = on,
            Directive::ProxyRevalidate => self.proxy_revalidate = on,
            _ => {}
        }
    }

    /// Sets an age directive (a flag directive is set on): to the smaller
    /// of its two values when `keep_smaller`, else to the later.
    fn set_age(&mut self, directive: Directive, seconds: u64, keep_smaller: bool) {
        let slot = match directive {
            Directive::MaxAge => &mut self.max_age,
            Directive::SMaxage => &mut self.s_maxage,
            Directive::StaleWhileRevalidate => &mut self.stale_while_revalidate,
            Directive::StaleIfError => &mut self.stale_if_error,
            flag => return self.set_flag(flag, true),
        };
        *slot = Some(match *slot {
            Some(old) if keep_smaller => old.min(seconds),
            _ => seconds,
        });
    }
}

/// Splits a `Cache-Control` value on commas outside quoted strings.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_quotes => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    ',' if !in_quotes => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
            if !item.trim().is_empty() {
                return Some(item);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg() -> PolicyConfig {
        PolicyConfig::for_tests()
    }

    /// Asked at `NOW_MS`, answered `DELAY_MS` later.
    const NOW_MS: u64 = 1_700_000_000_000;
    const DELAY_MS: u64 = 300;
    fn exchange() -> Exchange {
        Exchange {
            requested_ms: NOW_MS,
            received_ms: NOW_MS + DELAY_MS,
        }
    }

    /// How long the response stays fresh once stored (its lifetime less
    /// its age), for the tests written before ages counted.
    fn storable(status: u16, pairs: &[(&'static str, &str)]) -> Result<Duration, &'static str> {
        stored(&cfg(), Default::default(), status, pairs).map(|s| {
            assert_eq!(s.age, Duration::from_millis(DELAY_MS), "{pairs:?}");
            s.lifetime
        })
    }

    fn stored(
        config: &PolicyConfig,
        route: RouteRules,
        status: u16,
        pairs: &[(&'static str, &str)],
    ) -> Result<Storable, &'static str> {
        config.storable(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            &[header::ACCEPT_LANGUAGE],
            route,
            exchange(),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// An HTTP date `offset_secs` from `NOW_MS`.
    fn date(offset_secs: i64) -> String {
        let at = UNIX_EPOCH + Duration::from_millis(NOW_MS);
        let at = if offset_secs < 0 {
            at - Duration::from_secs(offset_secs.unsigned_abs())
        } else {
            at + Duration::from_secs(offset_secs.unsigned_abs())
        };
        httpdate::fmt_http_date(at)
    }

    #[test]
    fn plain_200_is_stored_with_default_ttl() {
        assert_eq!(storable(200, &[]), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn negative_statuses_use_the_negative_ttl() {
        assert_eq!(storable(404, &[]), Ok(Duration::from_secs(5)));
        assert_eq!(storable(410, &[]), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn statuses_outside_the_set_are_not_stored() {
        assert_eq!(storable(500, &[]), Err("status"));
        assert_eq!(storable(206, &[]), Err("status"));
        assert_eq!(storable(302, &[]), Err("status"));
    }

    #[test]
    fn private_responses_are_not_stored() {
        assert_eq!(storable(200, &[("set-cookie", "a=b")]), Err("set-cookie"));
        assert_eq!(
            storable(200, &[("cache-control", "no-store")]),
            Err("no-store")
        );
        assert_eq!(
            storable(200, &[("cache-control", "Private")]),
            Err("private")
        );
        assert_eq!(
            storable(200, &[("cache-control", "private=\"x-user\"")]),
            Err("private")
        );
        assert_eq!(
            storable(200, &[("cache-control", "no-cache")]),
            Err("no-cache")
        );
        assert_eq!(storable(200, &[("vary", "*")]), Err("vary"));
        assert_eq!(
            storable(200, &[("vary", "accept-language, *")]),
            Err("vary")
        );
        assert_eq!(
            storable(200, &[("vary", "Accept-Encoding")]),
            Ok(Duration::from_secs(60))
        );
        let varied = stored(
            &cfg(),
            Default::default(),
            200,
            &[("vary", "Accept-Encoding")],
        );
        assert_eq!(
            varied.map(|s| s.vary.map(|v| v.names().to_vec())),
            Ok(Some(vec![header::ACCEPT_ENCODING])),
            "a name past the configured ones makes a variant"
        );
        let keyed = stored(
            &cfg(),
            Default::default(),
            200,
            &[("vary", "accept-language")],
        );
        assert_eq!(
            keyed.map(|s| s.vary),
            Ok(None),
            "the configured ones do not"
        );
    }

    #[test]
    fn response_ages_only_shorten_the_ttl() {
        assert_eq!(
            storable(200, &[("cache-control", "public, max-age=10")]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=10, s-maxage=20")]),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(
            storable(200, &[("cache-control", "s-maxage=3600")]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=0")]),
            Err("expired")
        );
        assert_eq!(
            storable(200, &[("cache-control", "max-age=abc")]),
            Err("expired")
        );
    }

    #[test]
    fn expires_is_measured_from_date() {
        let (now, later) = (date(0), date(10));
        assert_eq!(
            storable(200, &[("date", &now), ("expires", &later)]),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(storable(200, &[("expires", "0")]), Err("expired"));
    }

    #[test]
    fn age_counts_against_the_lifetime() {
        let config = cfg();
        let ok = |pairs: &[(&'static str, &str)]| {
            stored(&config, Default::default(), 200, pairs).unwrap()
        };
        // Age plus the time the inner service took.
        let s = ok(&[("cache-control", "max-age=60"), ("age", "50")]);
        assert_eq!(s.lifetime, Duration::from_secs(60));
        assert_eq!(s.age, Duration::from_millis(50_300));
        assert_eq!(s.resident(), Duration::from_millis(9_700));
        // The configured TTL is a lifetime too.
        let s = ok(&[("age", "20")]);
        assert_eq!(s.resident(), Duration::from_millis(39_700));
        // Too old to store.
        for age in ["60", "70", "4294967296"] {
            let too_old = [("cache-control", "max-age=60"), ("age", age)];
            assert_eq!(storable(200, &too_old), Err("expired"), "{age}");
        }
        // The time since `Date`, when that is more.
        // (counted from the end of the second `Date` names).
        let s = ok(&[("date", &date(-30)), ("age", "2")]);
        assert_eq!(s.age, Duration::from_millis(30_300 - 999));
        assert_eq!(ok(&[("date", &date(0))]).age, Duration::from_millis(300));
        // An unknown request time is no delay.
        let unknown = Exchange {
            requested_ms: 0,
            received_ms: NOW_MS,
        };
        assert_eq!(
            initial_age(&headers(&[("age", "3")]), unknown),
            Duration::from_secs(3)
        );
        let s = ok(&[("date", &date(-30)), ("age", "40")]);
        assert_eq!(s.age, Duration::from_millis(40_300));
        // A `Date` ahead of the clock adds nothing.
        assert_eq!(ok(&[("date", &date(30))]).age, Duration::from_millis(300));
        // Bad `Age` values are no `Age`.
        for bad in ["abc", "-1", "", "1.5", "+3", "0x10"] {
            assert_eq!(
                ok(&[("age", bad)]).age,
                Duration::from_millis(300),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn age_is_read_as_the_rfc_says() {
        let age = |pairs: &[(&'static str, &str)]| age_field(&headers(pairs));
        assert_eq!(age(&[("age", "50")]), Some(50));
        assert_eq!(age(&[("age", " 7 ")]), Some(7));
        assert_eq!(age(&[("age", "50, 60")]), Some(50));
        assert_eq!(age(&[("age", "5"), ("age", "9")]), Some(5));
        assert_eq!(age(&[("age", "2147483647")]), Some(2_147_483_647));
        assert_eq!(age(&[("age", "2147483649")]), Some(1 << 31));
        assert_eq!(age(&[("age", "99999999999999999999999999")]), Some(1 << 31));
        for bad in ["", "abc", "-5", "5s", "1e3", ", 5"] {
            assert_eq!(age(&[("age", bad)]), None, "{bad:?}");
        }
        assert_eq!(age(&[]), None);
    }

    fn windows(swr: u64, sie: u64) -> StaleWindows {
        StaleWindows {
            while_revalidate: Duration::from_secs(swr),
            if_error: Duration::from_secs(sie),
        }
    }

    #[test]
    fn directives_decide_the_stale_windows() {
        let mut config = cfg();
        config.stale = windows(30, 60);
        let own = |config: &PolicyConfig, cc: &str| {
            stored(config, Default::default(), 200, &[("cache-control", cc)])
                .unwrap()
                .stale
        };
        // The layer's windows: nothing of its own to store.
        assert_eq!(own(&config, "public"), None);
        assert_eq!(own(&config, "max-age=10"), None);
        for forbidding in [
            "max-age=10, must-revalidate",
            "proxy-revalidate",
            "s-maxage=10",
            "s-maxage=10, must-revalidate, stale-if-error=5",
        ] {
            assert_eq!(
                own(&config, forbidding),
                Some(StaleWindows::NONE),
                "{forbidding}"
            );
        }
        // s-maxage with a window granted beside it: that window only.
        assert_eq!(
            own(&config, "s-maxage=10, stale-if-error=5"),
            Some(windows(0, 5))
        );
        // A response's own windows shorten the layer's...
        assert_eq!(
            own(&config, "stale-while-revalidate=5"),
            Some(windows(5, 60))
        );
        assert_eq!(own(&config, "stale-if-error=0"), Some(windows(30, 0)));
        assert_eq!(own(&config, "stale-while-revalidate=100"), None);
        // ... and with `stale_from_response`, set them, up to a day.
        config.stale_from_response = true;
        assert_eq!(
            own(&config, "stale-while-revalidate=100"),
            Some(windows(100, 60))
        );
        config.stale = StaleWindows::NONE;
        assert_eq!(
            own(&config, "stale-if-error=172800"),
            Some(windows(0, 86_400))
        );
        assert_eq!(own(&config, "max-age=5"), None);
        // A bad value is no window.
        config.stale = windows(30, 60);
        config.stale_from_response = false;
        assert_eq!(own(&config, "stale-if-error=soon"), Some(windows(30, 0)));
    }

    #[test]
    fn explicit_freshness_stores_only_what_the_response_says() {
        let mut config = cfg();
        config.freshness = Freshness::Explicit;
        let lifetime = |status: u16, pairs: &[(&'static str, &str)]| {
            stored(&config, Default::default(), status, pairs).map(|s| s.lifetime)
        };
        assert_eq!(lifetime(200, &[]), Err("no-freshness"));
        assert_eq!(
            lifetime(200, &[("last-modified", &date(-1000))]),
            Err("no-freshness")
        );
        assert_eq!(
            lifetime(200, &[("cache-control", "max-age=30")]),
            Ok(Duration::from_secs(30))
        );
        // The TTL caps it.
        assert_eq!(
            lifetime(200, &[("cache-control", "s-maxage=600")]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(200, &[("date", &date(0)), ("expires", &date(20))]),
            Ok(Duration::from_secs(20))
        );
        // Any status with explicit freshness, but partial and 304 answers.
        assert_eq!(
            lifetime(500, &[("cache-control", "max-age=5")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            lifetime(302, &[("cache-control", "max-age=5")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            lifetime(404, &[("cache-control", "max-age=50")]),
            Ok(Duration::from_secs(5)),
            "the negative TTL caps a 404"
        );
        for status in [206, 304] {
            assert_eq!(
                lifetime(status, &[("cache-control", "max-age=5")]),
                Err("status")
            );
        }
        assert_eq!(lifetime(500, &[]), Err("no-freshness"));
        // A route can set its own way, and its TTL is the cap.
        let config = cfg();
        let route = RouteRules {
            ttl: Some(Duration::from_secs(20)),
            freshness: Some(Freshness::Explicit),
            ..RouteRules::default()
        };
        assert_eq!(stored(&config, route, 200, &[]), Err("no-freshness"));
        assert_eq!(
            stored(&config, route, 200, &[("cache-control", "max-age=30")]).map(|s| s.lifetime),
            Ok(Duration::from_secs(20))
        );
        assert!(stored(&config, RouteRules::default(), 200, &[]).is_ok());
    }

    #[test]
    fn heuristic_freshness_is_a_tenth_of_the_last_modified_age() {
        let mut config = cfg();
        config.freshness = Freshness::Heuristic;
        let lifetime = |status: u16, pairs: &[(&'static str, &str)]| {
            stored(&config, Default::default(), status, pairs).map(|s| s.lifetime)
        };
        let now = date(0);
        assert_eq!(
            lifetime(200, &[("date", &now), ("last-modified", &date(-100))]),
            Ok(Duration::from_secs(10))
        );
        // Measured to the arrival without a `Date`.
        assert_eq!(
            lifetime(200, &[("last-modified", &date(-100))]).map(|l| l.as_millis()),
            Ok(10_030)
        );
        assert_eq!(
            lifetime(200, &[("date", &now), ("last-modified", &date(-100_000))]),
            Ok(Duration::from_secs(60)),
            "capped by the TTL"
        );
        // Explicit freshness wins over the heuristic.
        assert_eq!(
            lifetime(
                200,
                &[
                    ("cache-control", "max-age=3"),
                    ("last-modified", &date(-100))
                ]
            ),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(lifetime(200, &[]), Err("no-freshness"));
        assert_eq!(
            lifetime(200, &[("last-modified", "yesterday")]),
            Err("no-freshness")
        );
        assert_eq!(
            lifetime(200, &[("date", &now), ("last-modified", &date(100))]),
            Err("expired"),
            "modified in the future"
        );
        // Only heuristically cacheable statuses, and only those configured.
        let modified = [
            ("date", now.as_str()),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        assert_eq!(lifetime(500, &modified), Err("status"));
        assert_eq!(lifetime(302, &modified), Err("status"));
        assert_eq!(lifetime(405, &modified), Err("status"), "not in statuses");
        config.statuses.push(StatusCode::METHOD_NOT_ALLOWED);
        config.statuses.push(StatusCode::INTERNAL_SERVER_ERROR);
        let lifetime = |status: u16, pairs: &[(&'static str, &str)]| {
            stored(&config, Default::default(), status, pairs).map(|s| s.lifetime)
        };
        assert_eq!(lifetime(405, &modified), Ok(Duration::from_secs(60)));
        assert_eq!(lifetime(500, &modified), Err("status"), "not heuristic");
    }

    fn targeted(fields: &[(&'static str, bool)]) -> PolicyConfig {
        let mut config = cfg();
        config.targeted = fields
            .iter()
            .map(|(name, own)| TargetedField {
                name: HeaderName::from_static(name),
                own: *own,
            })
            .collect();
        config
    }

    #[test]
    fn a_targeted_field_overrides_cache_control() {
        let config = targeted(&[("tower-cache-control", true), ("cdn-cache-control", false)]);
        let lifetime = |pairs: &[(&'static str, &str)]| {
            stored(&config, Default::default(), 200, pairs).map(|s| s.lifetime)
        };
        let secs = |s| Ok(Duration::from_secs(s));
        assert_eq!(
            lifetime(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=30")
            ]),
            secs(30)
        );
        assert_eq!(
            lifetime(&[
                ("cache-control", "private"),
                ("cdn-cache-control", "max-age=30")
            ]),
            secs(30)
        );
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=30"),
                ("cdn-cache-control", "no-store")
            ]),
            Err("no-store")
        );
        // The first field present and valid wins.
        assert_eq!(
            lifetime(&[
                ("cdn-cache-control", "max-age=30"),
                ("tower-cache-control", "max-age=7")
            ]),
            secs(7)
        );
        // Not a valid dictionary (an upper-case key, a bad string): the
        // next field, then Cache-Control.
        for invalid in ["max-age=7, Private", "max-age=\"7", "max-age=7,", "(a b"] {
            assert_eq!(
                lifetime(&[
                    ("cache-control", "max-age=3"),
                    ("cdn-cache-control", "max-age=30"),
                    ("tower-cache-control", invalid)
                ]),
                secs(30),
                "{invalid}"
            );
            assert_eq!(
                lifetime(&[
                    ("cache-control", "max-age=3"),
                    ("tower-cache-control", invalid)
                ]),
                secs(3),
                "{invalid}"
            );
        }
        // A member of the wrong type is ignored, not the field.
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=3"),
                ("cdn-cache-control", "max-age=\"5\"")
            ]),
            secs(60)
        );
        assert_eq!(
            lifetime(&[("cdn-cache-control", "max-age=-5, s-maxage=1.5")]),
            secs(60)
        );
        // An empty field is no field: Cache-Control is obeyed.
        for empty in ["", " ", " , "] {
            assert_eq!(
                lifetime(&[("cache-control", "private"), ("cdn-cache-control", empty)]),
                Err("private"),
                "{empty:?}"
            );
        }
        // Expires is Cache-Control's, replaced with it.
        assert_eq!(
            lifetime(&[("cdn-cache-control", "public"), ("expires", "0")]),
            secs(60)
        );
        assert_eq!(lifetime(&[("expires", "0")]), Err("expired"));
        // A flag with a value of another type is still set.
        for flag in [
            "private=x-user",
            "no-store=1",
            "no-cache=x",
            "private=:AA==:",
        ] {
            assert!(lifetime(&[("cdn-cache-control", flag)]).is_err(), "{flag}");
        }
        // Booleans, parameters, strings, lines.
        assert_eq!(
            lifetime(&[("cdn-cache-control", "no-store=?0, max-age=5;a=1")]),
            secs(5)
        );
        assert_eq!(
            lifetime(&[("cdn-cache-control", "private=\"x-user\"")]),
            Err("private")
        );
        assert_eq!(
            lifetime(&[("cdn-cache-control", "no-cache=?1")]),
            Err("no-cache")
        );
        let two_lines = stored(
            &config,
            Default::default(),
            200,
            &[
                ("cdn-cache-control", "max-age=5"),
                ("cdn-cache-control", "must-revalidate"),
            ],
        )
        .unwrap();
        assert_eq!(two_lines.lifetime, Duration::from_secs(5));
        let mut with_windows = config.clone();
        with_windows.stale = windows(30, 30);
        let cc = CacheControl::parse_targeted(
            &headers(&[
                ("cdn-cache-control", "max-age=5"),
                ("cdn-cache-control", "must-revalidate"),
            ]),
            &HeaderName::from_static("cdn-cache-control"),
        )
        .unwrap();
        assert!(cc.must_revalidate);
        assert_eq!(with_windows.stale_windows(&cc), StaleWindows::NONE);
        // Only the fields that name the layer alone are stripped.
        let mut map = headers(&[
            ("cdn-cache-control", "max-age=5"),
            ("tower-cache-control", "max-age=5"),
            ("cache-control", "no-cache"),
        ]);
        config.strip_own_fields(&mut map);
        assert!(!map.contains_key("tower-cache-control"));
        assert!(map.contains_key("cdn-cache-control"));
        assert!(map.contains_key("cache-control"));
    }

    proptest::proptest! {
        #[test]
        fn any_field_value_is_read_without_panicking(
            cc in "[ -~]{0,48}",
            cdn in "[ -~]{0,48}",
            age in "[ -~]{0,12}",
            lm in "[ -~]{0,30}",
        ) {
            let mut config = targeted(&[("cdn-cache-control", true)]);
            for freshness in [Freshness::Configured, Freshness::Explicit, Freshness::Heuristic] {
                config.freshness = freshness;
                config.stale_from_response = freshness == Freshness::Heuristic;
                let pairs = [
                    ("cache-control", cc.as_str()),
                    ("cdn-cache-control", cdn.as_str()),
                    ("age", age.as_str()),
                    ("last-modified", lm.as_str()),
                    ("date", lm.as_str()),
                ];
                if let Ok(s) = stored(&config, Default::default(), 200, &pairs) {
                    proptest::prop_assert!(s.age < s.lifetime);
                    proptest::prop_assert!(s.lifetime <= Duration::from_secs(60));
                    if let Some(w) = s.stale {
                        proptest::prop_assert!(w.longest() <= MAX_STALE);
                    }
                }
            }
        }
    }

    #[test]
    fn declared_oversize_bodies_are_not_stored() {
        assert_eq!(
            storable(200, &[("content-length", "1025")]),
            Err("too-large")
        );
        assert!(storable(200, &[("content-length", "1024")]).is_ok());
    }

    #[test]
    fn no_cache_is_stored_only_to_be_revalidated() {
        let no_cache = [("cache-control", "no-cache"), ("etag", "\"1\"")];
        assert_eq!(storable(200, &no_cache), Err("no-cache"), "no window");
        let mut config = cfg();
        config.revalidation_window = Duration::from_secs(60);
        let s = stored(&config, Default::default(), 200, &no_cache).unwrap();
        assert_eq!((s.lifetime, s.resident()), (Duration::ZERO, Duration::ZERO));
        assert_eq!(s.stale, None, "the layer has no windows either");
        config.stale = windows(5, 5);
        let s = stored(&config, Default::default(), 200, &no_cache).unwrap();
        assert_eq!(s.stale, Some(StaleWindows::NONE), "never served stale");
        // It keeps for the revalidation window, from its freshness.
        assert_eq!(
            config.grace(&s, StatusCode::OK, &headers(&no_cache)),
            Duration::from_secs(60)
        );
        let plain = stored(&config, Default::default(), 200, &[]).unwrap();
        assert_eq!(
            config.grace(&plain, StatusCode::OK, &headers(&[])),
            Duration::from_secs(5)
        );
        // Without a validator, or for another status, it is not stored.
        let bare = [("cache-control", "no-cache")];
        assert_eq!(
            stored(&config, Default::default(), 200, &bare),
            Err("no-cache")
        );
        assert_eq!(
            stored(&config, Default::default(), 404, &no_cache),
            Err("no-cache")
        );
        let modified = [
            ("cache-control", "no-cache"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ];
        assert!(stored(&config, Default::default(), 200, &modified).is_ok());
        // Even where freshness comes from the origin.
        config.freshness = Freshness::Explicit;
        assert!(stored(&config, Default::default(), 200, &no_cache).is_ok());
    }

    #[test]
    fn revalidation_and_stale_directives_are_read() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "Must-Revalidate, stale-while-revalidate=30, stale-if-error=abc",
        )]));
        assert!(cc.must_revalidate && !cc.proxy_revalidate);
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(0));
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "proxy-revalidate, stale-if-error=9"),
            ("cache-control", "stale-if-error=4"),
        ]));
        assert!(cc.proxy_revalidate);
        assert_eq!(cc.stale_if_error, Some(4), "the smaller of two");
    }

    #[test]
    fn quoted_commas_do_not_split_directives() {
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            "no-cache=\"a, b\", max-age=5",
        )]));
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn credentials_bypass_unless_keyed() {
        let req = Request::get("/")
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("authorization"));
        assert_eq!(request_bypass(&req, &[header::AUTHORIZATION]), None);
        let req = Request::get("/").header("cookie", "s=1").body(()).unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("cookie"));
        let req = Request::get("/")
            .header("range", "bytes=0-1")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("range"));
    }

    #[test]
    fn bypass_reasons_keep_their_order_whatever_the_fields_order() {
        let req = Request::get("/")
            .header("upgrade", "websocket")
            .header("range", "bytes=0-1")
            .header("x-other", "1")
            .header("cookie", "s=1")
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("authorization"));
        assert_eq!(
            request_bypass(&req, &[header::AUTHORIZATION]),
            Some("cookie")
        );
        let keyed = [header::AUTHORIZATION, header::COOKIE];
        assert_eq!(request_bypass(&req, &keyed), Some("range"));
        let req = Request::get("/")
            .header("x-other", "1")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), Some("upgrade"));
        let req = Request::get("/")
            .header("accept", "*/*")
            .header("host", "a")
            .body(())
            .unwrap();
        assert_eq!(request_bypass(&req, &[]), None);
    }
}
