//! The crate's one error type.
//!
//! Configuration mistakes (a bad route template, a prefix that would break
//! the Redis key layout) surface when the layer is built, so an app fails at
//! start-up with a message that names the mistake. Store errors never reach
//! an HTTP client: the layer logs them and falls through to the inner
//! service; they are returned only by the store API that apps call directly.

use std::time::Duration;

/// Everything that can go wrong in `tower-cache-aside`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A route template given to the builder is not valid, or conflicts with
    /// another one.
    #[error("invalid route template `{template}`: {reason}")]
    InvalidRoute {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A builder setting is out of range or would break the key layout.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The Redis client reported an error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// A store call did not finish within its deadline.
    #[error("store call timed out after {0:?}")]
    Timeout(Duration),
    /// The store failed repeatedly and the circuit breaker is open: calls
    /// are not even tried until its cool-down ends.
    #[error("store unavailable (circuit open)")]
    Unavailable,
    /// A value could not be serialized or deserialized by the typed
    /// cache's codec.
    #[error("codec: {0}")]
    Codec(String),
    /// One or more purges failed; they are retried in the background.
    #[error("purge failed; retrying in the background")]
    PurgeFailed,
    /// A purge made on the primary that the replicas asked for by
    /// `RedisStoreBuilder::replicated_purges` did not acknowledge in time
    /// (or whose `WAIT` went over another connection): a failed purge,
    /// retried, that does not count against the circuit breaker (the
    /// primary answers).
    #[error("purge not replicated: {0}")]
    NotReplicated(String),
    /// Any other store failure (for custom [`Store`](crate::Store) implementations).
    #[error("store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Whether the error says the store could not be reached or did not
    /// answer in time (what the circuit breaker counts), as opposed to a
    /// store that answered with a refusal (a full `maxmemory`, a value of
    /// the wrong type), which proves it is up.
    pub(crate) fn is_unavailable(&self) -> bool {
        use fred::error::ErrorKind;
        match self {
            Error::Timeout(_) | Error::Unavailable | Error::Store(_) => true,
            Error::Redis(error) => matches!(
                error.kind(),
                ErrorKind::IO
                    | ErrorKind::Canceled
                    | ErrorKind::Timeout
                    | ErrorKind::Backpressure
                    | ErrorKind::Routing
                    | ErrorKind::Cluster
                    | ErrorKind::Sentinel
                    | ErrorKind::Auth
            ),
            _ => false,
        }
    }
}
