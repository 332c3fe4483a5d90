//! How a [`RedisStore`](super::RedisStore) connects: [`RedisStoreBuilder`],
//! which takes a URL and what a URL cannot say (TLS roots and client
//! certificates, purges acknowledged by replicas), and makes the fred
//! client with the crate's defaults.
//!
//! The invariants kept: a `rediss://` URL always gets a TLS configuration
//! of the crate's (system roots plus `SSL_CERT_FILE` plus the builder's
//! CAs), never a plain connection, and a crate built without a TLS feature
//! refuses it with an error that names the feature; a connection attempt
//! ends within the connection timeout, so no `connect` hangs.

use std::time::Duration;

use fred::clients::Client;
use fred::types::config::{Config, ReconnectPolicy, ServerConfig};
use fred::types::Builder;

use super::tls::{TlsBackend, TlsSettings};
use crate::Error;

/// How long one connection attempt (TCP, TLS, `AUTH`) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A command's timeout when the call has no deadline of its own.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds a [`RedisStore`](super::RedisStore) from a URL, with TLS and
/// replication settings a URL cannot carry; made by
/// [`RedisStore::builder`](super::RedisStore::builder), finished by
/// [`connect`](Self::connect) or [`connect_lazy`](Self::connect_lazy).
///
/// URLs are fred's: `redis://[user:password@]host[:port][/db]`,
/// `rediss://` (TLS), `redis-cluster://host:port?node=host:port&...`,
/// `redis-sentinel://host:port?node=...&sentinelServiceName=mymaster`, and
/// their `rediss-` forms; `valkey` for `redis` works too.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_cache_aside::Error> {
/// use std::time::Duration;
/// use tower_cache_aside::RedisStore;
///
/// let store = RedisStore::builder("rediss://cache:s3cret@redis.internal:6380")
///     .tls_ca_pem(std::fs::read("/etc/redis/ca.pem").unwrap_or_default())
///     .tls_client_identity(
///         std::fs::read("/etc/redis/client.pem").unwrap_or_default(),
///         std::fs::read("/etc/redis/client.key").unwrap_or_default(),
///     )
///     .replicated_purges(1, Duration::from_millis(200))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStoreBuilder {
    /// The URL, parsed when the client is made.
    pub(super) url: String,
    /// TLS, for `rediss` URLs.
    pub(super) tls: TlsSettings,
    /// Replicas that must hold a purge before it counts as done, and how
    /// long to wait for them.
    pub(super) replicated_purges: Option<(u32, Duration)>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    /// The URL without its password; no certificate or key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match (self.url.split_once("://"), self.url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &self.url[at..]),
            _ => self.url.clone(),
        };
        f.debug_struct("RedisStoreBuilder")
            .field("url", &url)
            .field("tls_backend", &self.tls.backend)
            .field("tls_system_roots", &self.tls.system_roots)
            .field("tls_client_identity", &self.tls.identity.is_some())
            .field("replicated_purges", &self.replicated_purges)
            .finish()
    }
}

impl RedisStoreBuilder {
    /// A builder for `url`, with the defaults of
    /// [`RedisStore::connect`](super::RedisStore::connect).
    pub(super) fn new(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.to_owned(),
            tls: TlsSettings::default(),
            replicated_purges: None,
        }
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks) for
    /// `rediss://` connections, besides the system's roots (or instead of
    /// them, with [`tls_system_roots(false)`](Self::tls_system_roots)).
    /// Calls add up.
    pub fn tls_ca_pem(mut self, pem: impl AsRef<[u8]>) -> RedisStoreBuilder {
        self.tls.ca_pem.extend_from_slice(pem.as_ref());
        self.tls.ca_pem.push(b'\n');
        self
    }

    /// Whether `rediss://` connections trust the system's roots and the
    /// file the `SSL_CERT_FILE` environment variable names (default: yes).
    /// Off, they trust only the CAs given by
    /// [`tls_ca_pem`](Self::tls_ca_pem). With rustls on macOS and Windows,
    /// a set `SSL_CERT_FILE` replaces the platform's store rather than
    /// adding to it (rustls-native-certs reads it so); `tls-native` adds
    /// it there too.
    pub fn tls_system_roots(mut self, trust: bool) -> RedisStoreBuilder {
        self.tls.system_roots = trust;
        self
    }

    /// The client certificate (`chain`: PEM, the leaf first) and its
    /// private key (`key`: PEM, PKCS#8, as `openssl genpkey` writes it) a
    /// `rediss://` connection shows a server that asks for one
    /// (`tls-auth-clients yes`): mutual TLS.
    pub fn tls_client_identity(
        mut self,
        chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> RedisStoreBuilder {
        self.tls.identity = Some((chain.as_ref().to_vec(), key.as_ref().to_vec()));
        self
    }

    /// The TLS library of `rediss://` connections: rustls (the default
    /// when the feature `tls-rustls` is on) or the platform's
    /// (`tls-native`). One whose feature is off is an error at connect.
    pub fn tls_backend(mut self, backend: TlsBackend) -> RedisStoreBuilder {
        self.tls.backend = backend;
        self
    }

    /// A purge counts as done only once `replicas` replicas hold it, or
    /// fails after `timeout` (Redis `WAIT`, on a connection of the purges'
    /// own, so that it never holds up a read). A purge that fails this way
    /// was made on the primary, is retried like any failed purge, and its
    /// path is not served from this instance's cache meanwhile. So a
    /// purge acknowledged to a write survives a failover to one of those
    /// replicas (Sentinel promotes the most up-to-date one). Keep
    /// `timeout` below the layer's `purge_timeout` (1 s by default), which
    /// bounds the whole purge. Off by default; see the README's
    /// "Connecting to Redis".
    ///
    /// Standalone and Sentinel deployments only: on a Cluster the store
    /// refuses it at connect (each slot's primary has its own replicas).
    pub fn replicated_purges(mut self, replicas: u32, timeout: Duration) -> RedisStoreBuilder {
        self.replicated_purges = Some((replicas.max(1), timeout.max(Duration::from_millis(1))));
        self
    }

    /// The fred client for this URL and these settings. With `fail_fast`
    /// off it keeps trying from the first connection on, not only after a
    /// connection that once worked.
    pub(super) fn client(&self, fail_fast: bool) -> Result<Client, Error> {
        let uses_tls = url_uses_tls(&self.url);
        #[allow(unused_mut)]
        // fred would build a TLS configuration of its own for a TLS
        // scheme (and, with rustls, install a process-wide crypto
        // provider): parse the URL as its plain form, then add the crate's.
        let mut config = Config {
            fail_fast,
            ..Config::from_url(&plain_scheme(&self.url))?
        };
        if !uses_tls && self.tls.is_customised() {
            return Err(Error::InvalidConfig(
                "TLS settings were given for a URL without TLS: use a rediss:// URL".into(),
            ));
        }
        if self.replicated_purges.is_some()
            && matches!(config.server, ServerConfig::Clustered { .. })
        {
            return Err(Error::InvalidConfig(
                "replicated_purges is for standalone and Sentinel deployments, not a Cluster"
                    .into(),
            ));
        }
        if uses_tls {
            #[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
            {
                config.tls = Some(super::tls::config(&self.tls)?);
            }
            #[cfg(not(any(feature = "tls-rustls", feature = "tls-native")))]
            return Err(Error::InvalidConfig(
                "a rediss:// URL needs TLS: build tower-cache-aside with the feature tls-rustls (or tls-native)"
                    .into(),
            ));
        }
        Ok(Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = CONNECTION_TIMEOUT;
                // AUTH, HELLO, SELECT and the sentinels' answers.
                c.internal_command_timeout = CONNECTION_TIMEOUT;
                // On a Cluster the store follows MOVED and ASK itself
                // (see call.rs): fred's own ASK handling mismatches replies.
                c.max_redirections = 0;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            .build()?)
    }
}

impl RedisStoreBuilder {
    /// `error` from the first exchange with the server (`connect`'s
    /// connection and `PING`), with a hint when the server closed a TLS
    /// connection: one that wants a client certificate, or does not trust
    /// the one shown, sends an alert and closes the connection after the
    /// handshake (TLS 1.3), and the close may be read before the alert.
    pub(super) fn first_contact_error(&self, error: fred::error::Error) -> Error {
        let details = error.details().to_ascii_lowercase();
        let closed = ["reset", "closed", "broken pipe", "eof", "alert"]
            .iter()
            .any(|word| details.contains(word));
        if !url_uses_tls(&self.url) || *error.kind() != fred::error::ErrorKind::IO || !closed {
            return Error::Redis(error);
        }
        let hint = if self.tls.identity.is_some() {
            "the server may not trust the client certificate (tls_client_identity)"
        } else {
            "the server may require a client certificate (tls_client_identity)"
        };
        Error::Redis(fred::error::Error::new(
            fred::error::ErrorKind::IO,
            format!("{}; over TLS, {hint}", error.details()),
        ))
    }
}

/// `url` with a TLS scheme written as its plain form (`rediss-cluster://`
/// as `redis-cluster://`), the rest unchanged.
fn plain_scheme(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let lower = scheme.to_ascii_lowercase();
    let plain = if let Some(tail) = lower.strip_prefix("rediss") {
        format!("redis{tail}")
    } else if let Some(tail) = lower.strip_prefix("valkeys") {
        format!("valkey{tail}")
    } else {
        return url.to_owned();
    };
    format!("{plain}://{rest}")
}

/// Whether `url`'s scheme asks for TLS (`rediss`, `valkeys`, and their
/// `-cluster` and `-sentinel` forms).
fn url_uses_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_schemes_are_told_apart() {
        for url in [
            "rediss://h:1",
            "rediss-cluster://h:1",
            "REDISS-sentinel://h:1",
            "valkeys://h:1",
        ] {
            assert!(url_uses_tls(url), "{url}");
        }
        for url in ["redis://h:1", "redis-cluster://h:1", "valkey://h", "h:1"] {
            assert!(!url_uses_tls(url), "{url}");
        }
    }

    #[test]
    fn tls_schemes_parse_as_their_plain_form_and_debug_hides_secrets() {
        assert_eq!(plain_scheme("rediss://u:p@h:1/2"), "redis://u:p@h:1/2");
        assert_eq!(
            plain_scheme("rediss-cluster://h:1?node=h:2"),
            "redis-cluster://h:1?node=h:2"
        );
        assert_eq!(
            plain_scheme("valkeys-sentinel://h:1"),
            "valkey-sentinel://h:1"
        );
        assert_eq!(plain_scheme("redis://h:1"), "redis://h:1");
        let shown = format!(
            "{:?}",
            RedisStoreBuilder::new("rediss://cache:s3cret@h:1").tls_client_identity("CERT", "KEY")
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("KEY\""),
            "{shown}"
        );
        assert!(shown.contains("@h:1"), "{shown}");
    }

    #[test]
    fn tls_settings_on_a_plain_url_are_an_error() {
        let error = RedisStoreBuilder::new("redis://127.0.0.1:1")
            .tls_system_roots(false)
            .client(true)
            .unwrap_err();
        assert!(error.to_string().contains("rediss://"), "{error}");
    }

    #[test]
    fn replicated_purges_on_a_cluster_are_an_error() {
        let error = RedisStoreBuilder::new("redis-cluster://127.0.0.1:1")
            .replicated_purges(1, Duration::from_millis(10))
            .client(true)
            .unwrap_err();
        assert!(error.to_string().contains("Cluster"), "{error}");
    }
}
