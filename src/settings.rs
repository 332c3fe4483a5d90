//! Every default in one place, and the settings the layer's [`Builder`]
//! and the typed cache's [`CacheBuilder`] share.
//!
//! Both builders hold a [`Common`] and get its setters from
//! [`common_setters!`], so a shared setting is written, documented and
//! validated once.
//!
//! [`Builder`]: crate::Builder
//! [`CacheBuilder`]: crate::CacheBuilder

use std::time::Duration;

use crate::Error;

/// Prefix of the layer's keys.
pub(crate) const DEFAULT_PREFIX: &str = "tca:";
/// Prefix of the typed cache's keys.
pub(crate) const DEFAULT_CACHE_PREFIX: &str = "tca:obj:";
/// Time to live of stored responses.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Time to live of stored 404 and 410 responses, and of a typed `None`.
pub(crate) const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Statuses stored: RFC 9110's heuristically cacheable ones that an app
/// usually means, without 206 and 501.
pub(crate) const DEFAULT_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];
/// Largest body stored.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Deadline of each store call on the request path.
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// Deadline of the purges a write waits for.
pub(crate) const DEFAULT_PURGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failures that open the circuit breaker, and its cool-down.
pub(crate) const DEFAULT_BREAKER: (u32, Duration) = (5, Duration::from_secs(2));
/// A fill lease outlives any sane origin call.
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Waiting on another caller's fill is bounded well below a client's
/// patience.
pub(crate) const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(3);
/// Entries (variants: queries, hosts, header values) one resource may
/// hold: room for a busy search page's queries, while a flood of random
/// queries on one path cannot grow its hash past a few MiB.
pub(crate) const DEFAULT_MAX_VARIANTS: usize = 1024;
/// Entry heads the layer keeps decoded.
pub(crate) const DEFAULT_DECODED_HEADS: usize = 2048;
/// The longest stale window of the layer (what an entry's 32 bits of
/// milliseconds hold, rounded down to whole days).
pub(crate) const MAX_STALE_WINDOW: Duration = Duration::from_secs(49 * 86_400);
/// Fields HTTP defines that the layer reads or writes itself, refused as
/// targeted cache-control field names.
pub(crate) const HTTP_FIELDS: [&str; 19] = [
    "cache-control",
    "expires",
    "pragma",
    "age",
    "date",
    "vary",
    "set-cookie",
    "etag",
    "last-modified",
    "content-type",
    "content-length",
    "content-encoding",
    "content-location",
    "location",
    "cache-status",
    "connection",
    "transfer-encoding",
    "authorization",
    "cookie",
];
/// The most entry heads the layer may be asked to keep decoded.
pub(crate) const MAX_DECODED_HEADS: usize = 1 << 20;

/// The settings both builders have.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) prefix: String,
    pub(crate) negative_ttl: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) fill_wait: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) ttl_jitter: f64,
    pub(crate) breaker: (u32, Duration),
}

impl Common {
    /// The defaults, with keys under `prefix`.
    pub(crate) fn with_prefix(prefix: &str) -> Common {
        Common {
            prefix: prefix.to_owned(),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            lease_ttl: DEFAULT_LEASE_TTL,
            fill_wait: DEFAULT_FILL_WAIT,
            stale_while_revalidate: Duration::ZERO,
            ttl_jitter: 0.0,
            breaker: DEFAULT_BREAKER,
        }
    }

    /// Fails on a setting that cannot work.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        check_prefix(&self.prefix)?;
        for (name, value) in [
            ("negative_ttl", self.negative_ttl),
            ("store_timeout", self.store_timeout),
            ("lease_ttl", self.lease_ttl),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must be above zero")));
            }
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return Err(Error::InvalidConfig(format!(
                "ttl_jitter is a fraction from 0 to 1, not {}",
                self.ttl_jitter
            )));
        }
        Ok(())
    }
}

/// Fails on a key prefix that would break the key layout.
fn check_prefix(prefix: &str) -> Result<(), Error> {
    if let Some(bad) = prefix.chars().find(|c| {
        matches!(c, '{' | '}' | '*' | '?' | '[' | ']' | '\\') || c.is_whitespace() || c.is_control()
    }) {
        return Err(Error::InvalidConfig(format!(
            "prefix {prefix:?} contains {bad:?}, which would break the key layout"
        )));
    }
    Ok(())
}

/// The setters of [`Common`]'s settings, for a builder with a `common`
/// field. `$what` names what the builder configures in the docs.
macro_rules! common_setters {
    ($what:literal) => {
        /// Prefix of every store key (default `tca:` for the layer,
        /// `tca:obj:` for the typed cache). Apps sharing one Redis give each
        /// its own. May not contain `{`, `}`, glob characters (`*?[]\`),
        /// white space or control characters.
        pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
            self.common.prefix = prefix.into();
            self
        }

        #[doc = concat!("Deadline of each store call ", $what, " makes (default 50 ms). ")]
        /// A lookup that misses it is a miss, a write that misses it is
        /// skipped: the store's lateness never becomes an error.
        pub fn store_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.store_timeout = timeout;
            self
        }

        /// How long a fill lease holds if its holder never releases it (a
        /// crashed process), default 10 s. Only the holder of an entry's
        /// lease calls the origin for it and stores it.
        pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
            self.common.lease_ttl = ttl;
            self
        }

        /// How long a caller that misses while another holds the fill lease
        /// waits for that fill (default 3 s); past it, the caller goes to
        /// the origin itself and stores nothing.
        pub fn fill_wait(mut self, wait: std::time::Duration) -> Self {
            self.common.fill_wait = wait;
            self
        }

        /// Serve a value up to `window` past its freshness while one
        /// background call, holding the fill lease, refreshes it. Default:
        /// off. Purged values are gone, never served stale.
        pub fn stale_while_revalidate(mut self, window: std::time::Duration) -> Self {
            self.common.stale_while_revalidate = window;
            self
        }

        /// Shortens each stored TTL by a random fraction of at most
        /// `fraction` (0 to 1; default 0), so that values written together
        /// do not expire together.
        pub fn ttl_jitter(mut self, fraction: f64) -> Self {
            self.common.ttl_jitter = fraction;
            self
        }

        /// The circuit breaker: after `failures` consecutive store errors
        /// or timeouts, calls skip the store for `cool_down` and go
        /// straight to the origin, then one probe decides whether it
        /// closes. Default: 5 failures, 2 s. `failures` 0 turns it off.
        pub fn circuit_breaker(mut self, failures: u32, cool_down: std::time::Duration) -> Self {
            self.common.breaker = (failures, cool_down);
            self
        }
    };
}

pub(crate) use common_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_settings_fail() {
        assert!(Common::with_prefix(DEFAULT_PREFIX).validate().is_ok());
        assert!(Common::with_prefix(DEFAULT_CACHE_PREFIX).validate().is_ok());
        for prefix in ["a{b", "a}b", "a*", "a b", "x?", "a\\b", "a[b]", "a\u{7}"] {
            let err = Common::with_prefix(prefix).validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{prefix}: {err}");
        }
        let mut zero = Common::with_prefix(DEFAULT_PREFIX);
        zero.lease_ttl = Duration::ZERO;
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lease_ttl"));
        for jitter in [-0.1, 1.1, f64::NAN] {
            let mut bad = Common::with_prefix(DEFAULT_PREFIX);
            bad.ttl_jitter = jitter;
            assert!(bad.validate().is_err(), "{jitter}");
        }
    }
}
