//! One store call's way to Redis: the client its commands go through, and
//! the time they may take.
//!
//! The invariant kept: a call on a store bounded by
//! [`Store::bounded`](crate::store::Store::bounded) ends by its bound, with
//! one timer at most. Its first command gets the whole bound (as its fred
//! timeout, or, for a hinted read, as a deadline the store's watchdog
//! keeps, with no fred timeout); each later command gets the time the call
//! has left; and fred's timeout comes back as the call's
//! [`Error::Timeout`], not as a Redis error.

use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::error::ErrorKind;
use fred::interfaces::ClientLike;
use fred::types::config::Options;

use crate::store::deadline::Deadlines;
use crate::Error;

/// One store call's way to Redis: the client its commands go through and,
/// on a store bounded by [`Store::bounded`](crate::store::Store::bounded),
/// its deadline.
///
/// A hinted read's `HGET` is watched by the store's [`Deadlines`] (no
/// timer); every other command carries the time its call has left as its
/// fred timeout: that is the call's only timer (fred arms one per command
/// anyway).
pub(super) struct Call<'a> {
    /// The client, as the store holds it (no options): for what is not a
    /// command of the call (is it clustered, a subscriber's configuration).
    /// A command goes through [`Call::client`] or [`Call::watched_client`].
    pub(super) client: &'a Client,
    /// The call's bound, and when the call started.
    bound: Option<(Duration, std::time::Instant)>,
    /// Whether a command was sent already (the first one gets the whole
    /// bound, with no clock read).
    sent: std::sync::atomic::AtomicBool,
}

impl<'a> Call<'a> {
    /// A call through `client`, which starts now and ends by `bound` if
    /// there is one.
    pub(super) fn new(client: &'a Client, bound: Option<Duration>) -> Call<'a> {
        Call {
            client,
            bound: bound.map(|bound| (bound, std::time::Instant::now())),
            sent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A command's result, with fred's timeout of a bounded call reported
    /// as the call's [`Error::Timeout`].
    pub(super) fn result<T>(&self, result: Result<T, fred::error::Error>) -> Result<T, Error> {
        result.map_err(|error| match self.bound {
            Some((bound, _)) if *error.kind() == ErrorKind::Timeout => Error::Timeout(bound),
            _ => Error::Redis(error),
        })
    }

    /// The client for the call's next command, with the time the call has
    /// left as its timeout; [`Error::Timeout`] when none is left.
    pub(super) fn client(&self) -> Result<WithOptions<Client>, Error> {
        let mut options = Options::default();
        if let Some((bound, started)) = self.bound {
            let left = if self.sent.swap(true, std::sync::atomic::Ordering::Relaxed) {
                bound.saturating_sub(started.elapsed())
            } else {
                bound
            };
            if left.is_zero() {
                return Err(Error::Timeout(bound));
            }
            options.timeout = Some(left);
        }
        Ok(self.client.with_options(&options))
    }

    /// As [`Call::client`], for a command that waits up to `wait` on the
    /// server (`WAIT`): off a bounded call, it gets `wait` and a second
    /// more as its fred timeout, not the client's default (1 s).
    pub(super) fn waiting_client(&self, wait: Duration) -> Result<WithOptions<Client>, Error> {
        if self.bound.is_some() {
            return self.client();
        }
        let options = Options {
            timeout: Some(wait.saturating_add(Duration::from_secs(1))),
            ..Options::default()
        };
        Ok(self.client.with_options(&options))
    }

    /// The client for the call's next command and, when it is the call's
    /// first and the store's watchdog `deadlines` runs, the call's deadline
    /// for the watchdog to keep: the command then carries no fred timeout
    /// (cheaper: see `deadline.rs`). Otherwise as [`Call::client`], with no
    /// deadline. A hit is one such first command.
    pub(super) fn watched_client(
        &self,
        deadlines: &Deadlines,
    ) -> Result<(WithOptions<Client>, Option<std::time::Instant>), Error> {
        let at = self
            .bound
            .and_then(|(bound, started)| started.checked_add(bound));
        match at {
            Some(at)
                if deadlines.running()
                    && !self.sent.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                let options = Options {
                    // Zero: no fred timeout, not even the client's default.
                    timeout: Some(Duration::ZERO),
                    ..Options::default()
                };
                Ok((self.client.with_options(&options), Some(at)))
            }
            _ => Ok((self.client()?, None)),
        }
    }

    /// The error of a bounded call that ran out of time.
    pub(super) fn timeout(&self) -> Error {
        Error::Timeout(self.bound.map_or(Duration::ZERO, |(bound, _)| bound))
    }

    /// At most `wait`, and no longer than the call has left.
    pub(super) fn within(&self, wait: Duration) -> Duration {
        match self.bound {
            Some((bound, started)) => wait.min(bound.saturating_sub(started.elapsed())),
            None => wait,
        }
    }
}
