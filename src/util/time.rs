//! Time: the wall clock entries are stamped with, TTL jitter, and the one
//! freshness computation every reader of an entry uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `ttl` shortened by a random fraction of at most `jitter` (0 to 1), so
/// that entries written together do not expire together.
pub(crate) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    ttl.mul_f64(1.0 - jitter * fastrand::f64())
        .max(Duration::from_millis(1))
}

/// How long past its freshness a value may still be served: while it is
/// refreshed in the background, and in place of an origin that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StaleWindows {
    pub(crate) while_revalidate: Duration,
    pub(crate) if_error: Duration,
}

impl StaleWindows {
    /// Never served stale.
    pub(crate) const NONE: StaleWindows = StaleWindows {
        while_revalidate: Duration::ZERO,
        if_error: Duration::ZERO,
    };

    /// The longer window: how long a value is kept past its freshness.
    pub(crate) fn longest(&self) -> Duration {
        self.while_revalidate.max(self.if_error)
    }
}

/// Where a stored value stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stand {
    /// Within its TTL.
    Fresh,
    /// Past its TTL, within the stale-while-revalidate window.
    StaleWhileRevalidate,
    /// Past that, within the stale-if-error window.
    StaleIfError,
    /// Past every window: not to be served.
    Expired,
}

/// The age and freshness of a value stored at `stored_at` (ms since the
/// epoch) for `ttl` ms, judged at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    stored_at: u64,
    expires_at: u64,
    now: u64,
}

impl Freshness {
    /// Judged at `now` (ms since the epoch).
    pub(crate) fn at(stored_at: u64, ttl: u64, now: u64) -> Freshness {
        Freshness {
            stored_at,
            expires_at: stored_at.saturating_add(ttl),
            now,
        }
    }

    /// Judged now.
    pub(crate) fn now(stored_at: u64, ttl: u64) -> Freshness {
        Freshness::at(stored_at, ttl, now_ms())
    }

    /// Whether it is within its TTL.
    pub(crate) fn is_fresh(&self) -> bool {
        self.now < self.expires_at
    }

    /// Where it stands given its stale windows.
    pub(crate) fn stand(&self, windows: StaleWindows) -> Stand {
        if self.is_fresh() {
            return Stand::Fresh;
        }
        let past = Duration::from_millis(self.now - self.expires_at);
        if past < windows.while_revalidate {
            Stand::StaleWhileRevalidate
        } else if past < windows.if_error {
            Stand::StaleIfError
        } else {
            Stand::Expired
        }
    }

    /// How long ago it stopped being fresh (`None` while fresh).
    pub(crate) fn past_freshness(&self) -> Option<Duration> {
        (!self.is_fresh()).then(|| Duration::from_millis(self.now - self.expires_at))
    }

    /// Whole seconds since it was stored (`Age`).
    pub(crate) fn age_secs(&self) -> u64 {
        self.now.saturating_sub(self.stored_at) / 1000
    }

    /// Whole seconds of freshness left; when stale, how long ago it
    /// expired, rounded up, as a negative number (`Cache-Status` `ttl`).
    pub(crate) fn ttl_secs(&self) -> i64 {
        if self.is_fresh() {
            i64::try_from((self.expires_at - self.now) / 1000).unwrap_or(i64::MAX)
        } else {
            -i64::try_from((self.now - self.expires_at).div_ceil(1000)).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_counts_age_ttl_and_windows() {
        let f = Freshness::at(10_000, 5_000, 12_500);
        assert!(f.is_fresh());
        assert_eq!((f.age_secs(), f.ttl_secs()), (2, 2));
        assert_eq!(f.stand(StaleWindows::NONE), Stand::Fresh);

        let stale = Freshness::at(10_000, 5_000, 15_001);
        assert_eq!(stale.ttl_secs(), -1, "a stale ttl is rounded up");
        assert_eq!(stale.age_secs(), 5);
        let windows = StaleWindows {
            while_revalidate: Duration::from_millis(10),
            if_error: Duration::from_millis(100),
        };
        assert_eq!(windows.longest(), Duration::from_millis(100));
        assert_eq!(stale.stand(windows), Stand::StaleWhileRevalidate);
        assert_eq!(
            Freshness::at(10_000, 5_000, 15_050).stand(windows),
            Stand::StaleIfError
        );
        assert_eq!(
            Freshness::at(10_000, 5_000, 15_100).stand(windows),
            Stand::Expired
        );
        assert_eq!(
            Freshness::at(10_000, 5_000, 15_000).stand(windows),
            Stand::StaleWhileRevalidate
        );
        assert_eq!(
            Freshness::at(10_000, 5_000, 15_000).stand(StaleWindows::NONE),
            Stand::Expired,
            "no window: expired at its ttl"
        );
        // Stored in the future (clock skew between writers): age 0.
        assert_eq!(Freshness::at(20_000, 5_000, 12_000).age_secs(), 0);
        let far = Freshness::at(u64::MAX, u64::MAX, 0);
        assert_eq!(far.ttl_secs(), i64::try_from(u64::MAX / 1000).unwrap());
        assert_eq!(
            Freshness::at(0, 0, u64::MAX).ttl_secs(),
            -i64::try_from(u64::MAX.div_ceil(1000)).unwrap()
        );
    }

    #[test]
    fn jitter_only_shortens() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered(ttl, 0.0), ttl);
        for _ in 0..100 {
            let j = jittered(ttl, 0.5);
            assert!(j <= ttl && j >= Duration::from_secs(50), "{j:?}");
        }
        assert!(jittered(Duration::from_millis(1), 1.0) >= Duration::from_millis(1));
    }
}
