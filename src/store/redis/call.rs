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
//!
//! On a Cluster the store follows redirections itself ([`Call::follow`]):
//! its fred clients follow none (`max_redirections` 0), because fred
//! 10.1 answers `ASK` by reading `ASKING`'s reply out of band on a
//! connection that has other commands in flight (handing replies to the
//! wrong callers) and then routes the command back to the slot's old
//! owner. A command redirected once is sent again (after `MOVED` fred has
//! refreshed its slot map); redirected again, it goes with `ASKING` to the
//! node importing its slot (`asking.rs`); `TRYAGAIN` from the slot's old
//! owner (a resource's keys half moved) is retried after a short pause.
//! All of it within the call's bound.

use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::error::ErrorKind;
use fred::interfaces::ClientLike;
use fred::types::config::Options;
use fred::types::config::Server;
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};

use super::asking::Migrations;
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
    /// The store's migrating slots, and its clients of the nodes importing
    /// them.
    migrations: &'a Migrations,
}

impl<'a> Call<'a> {
    /// A call through `client`, which starts now and ends by `bound` if
    /// there is one.
    pub(super) fn new(
        client: &'a Client,
        bound: Option<Duration>,
        migrations: &'a Migrations,
    ) -> Call<'a> {
        Call {
            client,
            bound: bound.map(|bound| (bound, std::time::Instant::now())),
            sent: std::sync::atomic::AtomicBool::new(false),
            migrations,
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

/// How a command reaches the node that holds its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// As fred routes it: to the owner of its keys' slot in fred's map.
    Direct,
    /// With `ASKING` first, to this node, which imports the slot.
    Asking(Server),
}

/// Where a call is in following a Cluster's redirections (see
/// [`Call::follow`]).
#[derive(Debug)]
pub(super) struct Follow {
    /// The route of the next send.
    pub(super) route: Route,
    /// The slot of the command's keys.
    slot: Option<u16>,
    /// Sends so far that were redirected or told to try again.
    tries: u32,
    /// The pauses after `TRYAGAIN` so far.
    paused: Duration,
}

impl Follow {
    /// Following a command on keys of `slot` (none: no keys), sent first
    /// as fred routes it.
    pub(super) fn new(slot: Option<u16>) -> Follow {
        Follow {
            route: Route::Direct,
            slot,
            tries: 0,
            paused: Duration::ZERO,
        }
    }
}

/// How long a first connection to an importing node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a command may take in all while a Cluster redirects it.
const MAX_TRIES: u32 = 8;

/// The pause before the first retry after `TRYAGAIN`, doubled each time.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(2);

/// How long the pauses after `TRYAGAIN` may take in all.
const TRYAGAIN_BUDGET: Duration = Duration::from_millis(100);

/// Whether `error` is a redirection: one fred did not follow (`MOVED` or
/// `ASK`, with `max_redirections` 0), or one an importing node answered
/// the store's own client with.
fn is_redirected(error: &fred::error::Error) -> bool {
    let details = error.details();
    (*error.kind() == ErrorKind::Routing && details.starts_with("Too many redirections"))
        || details.starts_with("MOVED ")
        || details.starts_with("ASK ")
}

/// Whether `error` is a Cluster's `TRYAGAIN`: a command on several keys
/// of a slot being migrated, some of them moved already.
pub(super) fn is_try_again(error: &Error) -> bool {
    matches!(error, Error::Redis(error) if error.details().starts_with("TRYAGAIN"))
}

/// The slot a command is routed by, if it names one.
fn slot_of(command: &CustomCommand) -> Option<u16> {
    match command.cluster_hash {
        ClusterHash::Custom(slot) => Some(slot),
        _ => None,
    }
}

impl Call<'_> {
    /// After a send of the call failed with `error`: whether to send again,
    /// on the route `follow` then holds, while the call has time and tries
    /// left. A redirection is sent again directly the first time (after
    /// `MOVED`, fred's slot map is new), then to the node importing the
    /// slot, with `ASKING`, once the slot's owner has named it; an
    /// importing node that redirects is forgotten. `TRYAGAIN` from the
    /// slot's owner is sent again after a pause. Nothing else is.
    pub(super) async fn follow(&self, error: &Error, follow: &mut Follow) -> bool {
        let Error::Redis(fred_error) = error else {
            return false;
        };
        if follow.tries >= MAX_TRIES || !self.client.is_clustered() {
            return false;
        }
        follow.tries += 1;
        if is_redirected(fred_error) {
            let Some(slot) = follow.slot else {
                return true;
            };
            follow.route = match follow.route {
                // The migration ended, or went elsewhere.
                Route::Asking(_) => {
                    self.migrations.forget(slot);
                    Route::Direct
                }
                Route::Direct => match self.migrations.known(slot) {
                    Some(node) => Route::Asking(node),
                    None if follow.tries == 1 => Route::Direct,
                    None => match Box::pin(self.importing_node(slot)).await {
                        Some(node) => Route::Asking(node),
                        None => Route::Direct,
                    },
                },
            };
            return true;
        }
        // Through ASKING, the source held none of the keys and the target
        // lacks some: they are nowhere else, and will not be until the
        // slot's migration ends. Directly, the source holds some and the
        // rest are moving: worth a pause.
        if !is_try_again(error) || follow.route != Route::Direct {
            return false;
        }
        let pause = TRYAGAIN_PAUSE.saturating_mul(1 << (follow.tries - 1).min(6));
        // Room for the pause and the send after it, within the budget and
        // what the call has left.
        let room = self.within(TRYAGAIN_BUDGET.saturating_sub(follow.paused));
        if pause.saturating_mul(2) > room {
            return false;
        }
        follow.paused += pause;
        tokio::time::sleep(pause).await;
        true
    }

    /// Sends `command` with `args` on `route`, with the time the call has
    /// left as its timeout.
    pub(super) async fn send<R: FromValue>(
        &self,
        route: &Route,
        command: CustomCommand,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        match route {
            Route::Direct => self.send_direct(command, args).await,
            // Boxed: rare, and its futures would make every send's larger.
            Route::Asking(node) => Box::pin(self.send_asking(node, command, args)).await,
        }
    }

    /// The node importing `slot`, as its owner (fred's route for the slot)
    /// names it in `CLUSTER NODES`, remembered; `None` when it names none.
    async fn importing_node(&self, slot: u16) -> Option<Server> {
        let command = CustomCommand::new_static("CLUSTER", ClusterHash::Custom(slot), false);
        let nodes: String = self
            .send_direct(command, vec![Value::from_static_str("NODES")])
            .await
            .ok()?;
        self.migrations.learn(&nodes, slot)
    }

    /// Sends `ASKING` and `command` with `args` to `node`, pipelined on the
    /// store's client of it; the command's reply.
    async fn send_asking<R: FromValue>(
        &self,
        node: &Server,
        command: CustomCommand,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let options = self.left()?;
        let client = self.node_client(node).await?;
        let pipeline = client.pipeline();
        let queued = pipeline.with_options(&options);
        let asking = CustomCommand::new_static("ASKING", ClusterHash::Random, false);
        // Each answered at once ("QUEUED"); the replies come with `try_all`.
        self.result(
            queued
                .custom::<Value, Value>(asking, Vec::<Value>::new())
                .await,
        )?;
        self.result(queued.custom::<Value, Value>(command, args).await)?;
        let mut replies = pipeline.try_all::<Value>().await;
        let reply = replies
            .pop()
            .ok_or_else(|| Error::Store("no reply to a command sent after ASKING".into()))?;
        self.result(reply.and_then(Value::convert))
    }

    /// Sends `command` with `args` as fred routes it, with the time the
    /// call has left as its timeout.
    pub(super) async fn send_direct<R: FromValue>(
        &self,
        command: CustomCommand,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let client = self.client()?;
        self.result(client.custom::<R, Value>(command, args).await)
    }

    /// Sends `command` with `args` to the Cluster node `node`: over fred's
    /// connection to it when fred has one, else over the store's own client
    /// of it (a node that owns no slot yet).
    pub(super) async fn send_to<R: FromValue>(
        &self,
        node: &Server,
        command: CustomCommand,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let mut options = self.left()?;
        if self.client.active_connections().contains(node) {
            options.cluster_node = Some(node.clone());
            return self.result(
                self.client
                    .with_options(&options)
                    .custom(command, args)
                    .await,
            );
        }
        let client = self.node_client(node).await?;
        self.result(client.with_options(&options).custom(command, args).await)
    }

    /// Options carrying the time the call has left as the timeout of its
    /// next command, for a client other than fred's routed one.
    fn left(&self) -> Result<Options, Error> {
        Ok(self.client()?.options().clone())
    }

    /// The store's own client of the Cluster node `node` (see
    /// `asking.rs`), connected within what the call has left.
    pub(super) async fn node_client(&self, node: &Server) -> Result<Client, Error> {
        let wait = self.within(CONNECT_TIMEOUT);
        self.migrations.client(self.client, node, wait).await
    }

    /// Sends `make`'s command again after its first send failed with
    /// `first`, following a Cluster's redirections (see
    /// [`follow`](Self::follow)); `first` itself when there is nothing to
    /// follow.
    pub(super) async fn followed<R: FromValue>(
        &self,
        first: Error,
        make: impl Fn() -> (CustomCommand, Vec<Value>),
    ) -> Result<R, Error> {
        let mut follow = Follow::new(slot_of(&make().0));
        let mut error = first;
        while self.follow(&error, &mut follow).await {
            let (command, args) = make();
            match self.send(&follow.route, command, args).await {
                Ok(reply) => return Ok(reply),
                Err(next) => error = next,
            }
        }
        Err(error)
    }
}
