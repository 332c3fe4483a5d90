//! Every store call goes through [`Guarded`]: a deadline, and the circuit
//! breaker in front of the store.
//!
//! While the store is down, every lookup would wait for its deadline before
//! falling through to the origin. After `threshold` consecutive failures
//! (errors or timeouts) the breaker *opens*: requests skip the store and go
//! straight to the origin, with no added latency, for `cool_down`. Then one
//! request is let through as a probe (*half-open*); its success closes the
//! breaker, its failure opens it for another `cool_down`.
//!
//! The state is a few atomics: checking it costs no lock on the hot path.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::backend::{Store, StoreFuture};
use crate::Error;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    /// Consecutive failures so far.
    failures: AtomicU32,
    /// While open: until when, in milliseconds since `epoch`; 0 when closed.
    open_until: AtomicU64,
    /// When the probe of a half-open breaker went out (ms since `epoch`);
    /// 0 when none is out. A probe that never reports back (its request
    /// was dropped) is replaced after a cool-down.
    probing: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    /// A breaker; `threshold` 0 never opens.
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold,
            cool_down,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a request may call the store now. Past the cool-down, one
    /// caller gets `true` (the probe) until it reports back.
    pub(crate) fn allow(&self) -> bool {
        let open_until = self.open_until.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        let now = self.now();
        if now < open_until {
            return false;
        }
        // Half-open: one probe at a time.
        let probe = self.probing.load(Ordering::Acquire);
        let cool_down = u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX);
        if probe != 0 && now.saturating_sub(probe) < cool_down {
            return false;
        }
        self.probing
            .compare_exchange(probe, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the breaker is open.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Whether the breaker is open and its cool-down has not ended: calls
    /// that should fail fast (purges) check this, which takes no probe.
    fn cooling(&self) -> bool {
        let open_until = self.open_until.load(Ordering::Acquire);
        open_until != 0 && self.now() < open_until
    }

    /// Every store call that succeeds reports here, from every worker
    /// thread: so it only reads while the breaker is closed and nothing
    /// has failed, and the shared cache line is not written on every call.
    fn success(&self) {
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Acquire) != 0
            && self.open_until.swap(0, Ordering::AcqRel) != 0
        {
            tracing::info!(target: "tower_cache_aside", "store answers again: circuit closed");
        }
        if self.probing.load(Ordering::Acquire) != 0 {
            self.probing.store(0, Ordering::Release);
        }
    }

    fn failure(&self) {
        if self.threshold == 0 {
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.threshold {
            let until = self
                .now()
                .saturating_add(u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX))
                .max(1);
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    target: "tower_cache_aside",
                    failures,
                    cool_down = ?self.cool_down,
                    "store failing: circuit open, requests go straight to the origin"
                );
            }
            self.probing.store(0, Ordering::Release);
        }
    }

    /// Records the outcome of a store call: only errors that say the store
    /// is unreachable or late count as failures; a refusal proves it is up.
    fn record<T>(&self, result: &Result<T, Error>) {
        match result {
            Err(error) if error.is_unavailable() => self.failure(),
            _ => self.success(),
        }
    }
}

/// A store whose calls are bounded by a deadline and reported to a
/// circuit breaker: the one way the rest of the crate calls a store.
///
/// Calls on the request path are bounded by the store itself when it
/// offers such a view ([`Store::bounded`]), else by a timer armed around
/// each call. A late call is an [`Error::Timeout`]. Every failure is logged
/// once, here.
pub(crate) struct Guarded {
    /// The store as given, for calls with a deadline of their own.
    store: Arc<dyn Store>,
    /// The store request-path calls go to: `store`'s bounded view, or
    /// `store` itself.
    calls: Arc<dyn Store>,
    /// The timer armed around each request-path call: `None` when the
    /// store bounds its calls itself.
    timer: Option<Duration>,
    timeout: Duration,
    breaker: Breaker,
}

impl Guarded {
    /// Calls `store` within `timeout`, behind `breaker`.
    pub(crate) fn new(store: Arc<dyn Store>, timeout: Duration, breaker: Breaker) -> Guarded {
        let (calls, timer) = match store.bounded(timeout) {
            Some(bounded) => (bounded, None),
            None => (store.clone(), Some(timeout)),
        };
        Guarded {
            store,
            calls,
            timer,
            timeout,
            breaker,
        }
    }

    /// The deadline of request-path calls.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a call may go to the store now (see [`Breaker::allow`]).
    /// Checked before a request starts its store calls, so that an open
    /// breaker sends it straight to the origin.
    pub(crate) fn allow(&self) -> bool {
        self.breaker.allow()
    }

    /// Runs the store call `call` makes, within the timeout, and tells the
    /// breaker how it went.
    pub(crate) async fn call<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn Store) -> StoreFuture<'a, T>,
    ) -> Result<T, Error> {
        let call = call(self.calls.as_ref());
        let result = match self.timer {
            None => call.await,
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .unwrap_or(Err(Error::Timeout(timeout))),
        };
        self.settle(result)
    }

    /// Runs `call` within `timeout` instead (purges, background releases).
    /// Fails at once, as [`Error::Unavailable`], while the breaker is open:
    /// such calls are retried, and must not be the breaker's probe.
    pub(crate) async fn call_within<'a, T>(
        &'a self,
        timeout: Duration,
        call: impl FnOnce(&'a dyn Store) -> StoreFuture<'a, T>,
    ) -> Result<T, Error> {
        if self.breaker.cooling() {
            return Err(Error::Unavailable);
        }
        let result = tokio::time::timeout(timeout, call(self.store.as_ref()))
            .await
            .unwrap_or(Err(Error::Timeout(timeout)));
        self.settle(result)
    }

    /// Runs `call` within `timeout` outside the breaker, and quietly:
    /// background lease releases, which neither wait on the breaker nor
    /// sway it (a lease not released ends at its TTL).
    pub(crate) async fn raw_within<'a, T>(
        &'a self,
        timeout: Duration,
        call: impl FnOnce(&'a dyn Store) -> StoreFuture<'a, T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(timeout, call(self.store.as_ref()))
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    fn settle<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        self.breaker.record(&result);
        if let Err(error) = &result {
            tracing::warn!(target: "tower_cache_aside", %error, "store call failed");
        }
        result
    }
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("timeout", &self.timeout)
            .field("bounded_by_store", &self.timer.is_none())
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let breaker = Breaker::new(3, Duration::from_millis(50));
        breaker.failure();
        breaker.failure();
        breaker.success();
        breaker.failure();
        breaker.failure();
        assert!(breaker.allow(), "a success resets the count");
        breaker.failure();
        assert!(breaker.is_open());
        assert!(!breaker.allow(), "open: no store calls");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "half-open: one probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.failure();
        assert!(!breaker.allow(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow());
        breaker.success();
        assert!(!breaker.is_open());
        assert!(breaker.allow() && breaker.allow(), "closed: everyone");
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let breaker = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            breaker.failure();
        }
        assert!(breaker.allow());
    }
}
