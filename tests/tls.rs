//! `rediss://`: a TLS-only `redis-server` per test, with certificates the
//! test makes (rcgen), through both TLS backends: a trusted server, a
//! server that asks for a client certificate (mutual TLS), a server
//! certificate the client must reject and a client certificate the server
//! must reject. Each refusal is a clear error from `connect`, and a logged
//! pass-through from `connect_lazy`, never a hang.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_cache_aside::store::{RedisStoreBuilder, TlsBackend};
use tower_cache_aside::RedisStore;

use support::pki::Pki;
use support::RedisServer;

/// Both TLS libraries the crate builds with (the test run turns on every
/// feature).
const BACKENDS: [TlsBackend; 2] = [TlsBackend::Rustls, TlsBackend::NativeTls];

/// The safety net around a connect that must end by itself: a refusal is
/// an error within the connection timeout, never a hang.
const NO_HANG: Duration = Duration::from_secs(30);

fn tls_server(pki: &Pki, auth_clients: bool) -> RedisServer {
    RedisServer::launch_with(|port| pki.server_args(port, auth_clients))
}

fn url(server: &RedisServer) -> String {
    format!("rediss://127.0.0.1:{}", server.port())
}

/// A builder that trusts only the test's CA, through `backend`.
fn trusting_ca(pki: &Pki, server: &RedisServer, backend: TlsBackend) -> RedisStoreBuilder {
    RedisStore::builder(&url(server))
        .tls_backend(backend)
        .tls_system_roots(false)
        .tls_ca_pem(&pki.ca.cert)
}

/// The store caches and purges (see `support::caches_and_purges`) on a
/// path of its own: the rounds of a test share their server.
async fn caches_and_purges(store: RedisStore, what: &str) {
    support::caches_and_purges(store, &format!("/users/{}", what.replace(' ', "-"))).await;
}

#[tokio::test]
async fn a_tls_server_signed_by_a_given_ca_works_through_both_backends() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    for backend in BACKENDS {
        let store = trusting_ca(&pki, &server, backend)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        caches_and_purges(store, &format!("{backend:?}")).await;
    }
}

#[tokio::test]
async fn a_password_travels_in_the_rediss_url() {
    let pki = Pki::new();
    let server = RedisServer::launch_with(|port| {
        let mut args = pki.server_args(port, false);
        args.extend(["--requirepass".into(), "s3cret".into()]);
        args
    });
    let url = format!("rediss://default:s3cret@127.0.0.1:{}", server.port());
    let store = RedisStore::builder(&url)
        .tls_ca_pem(&pki.ca.cert)
        .connect()
        .await
        .expect("TLS and a password");
    caches_and_purges(store, "password").await;
    let wrong = format!("rediss://default:wrong@127.0.0.1:{}", server.port());
    let refused = tokio::time::timeout(
        NO_HANG,
        RedisStore::builder(&wrong)
            .tls_ca_pem(&pki.ca.cert)
            .connect(),
    )
    .await
    .expect("no hang");
    let text = refused.expect_err("a wrong password").to_string();
    assert!(
        text.contains("WRONGPASS") || text.contains("invalid username-password"),
        "{text}"
    );
}

#[tokio::test]
async fn mutual_tls_takes_a_client_certificate_the_server_trusts() {
    let pki = Pki::new();
    let server = tls_server(&pki, true);
    for backend in BACKENDS {
        let store = trusting_ca(&pki, &server, backend)
            .tls_client_identity(&pki.client.cert, &pki.client.key)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{backend:?} with a client certificate: {e}"));
        caches_and_purges(store, &format!("{backend:?} mTLS")).await;

        // No certificate, or one signed by a CA the server does not know:
        // refused by the server, a clear error, within the timeout.
        let none = trusting_ca(&pki, &server, backend);
        let rogue = trusting_ca(&pki, &server, backend)
            .tls_client_identity(&pki.rogue_client.cert, &pki.rogue_client.key);
        // The error says what is wrong: the server's TLS alert when it was
        // read before the close ("certificate required", rustls'
        // `CertificateRequired`; "unknown ca", `UnknownCA`), and the hint
        // that names the setting either way.
        let cases = [
            (
                "no certificate",
                none,
                "certificaterequired",
                "requireaclientcertificate",
            ),
            (
                "a rogue certificate",
                rogue,
                "unknownca",
                "nottrusttheclientcertificate",
            ),
        ];
        for (what, builder, alert, hint) in cases {
            let result = tokio::time::timeout(NO_HANG, builder.connect())
                .await
                .unwrap_or_else(|_| panic!("{backend:?}, {what}: connect hangs"));
            let error = result.expect_err("the server accepts no such client");
            let text = error.to_string().to_lowercase().replace([' ', '_'], "");
            assert!(
                text.contains(hint) && text.contains("tlsclientidentity"),
                "{backend:?}, {what}: the error does not say what is wrong: {error}"
            );
            if !text.contains(alert) {
                // The close was read before the alert: say so, for the log.
                eprintln!("{backend:?}, {what}: no alert in {error}");
            }
        }
    }
}

#[tokio::test]
async fn a_server_certificate_the_client_does_not_trust_is_an_error() {
    let pki = Pki::new();
    let server = tls_server(&pki, false);
    for backend in BACKENDS {
        // The system's roots do not hold the test's CA; and a client told
        // to trust only another CA trusts nothing the server shows.
        let system = RedisStore::builder(&url(&server)).tls_backend(backend);
        let other = RedisStore::builder(&url(&server))
            .tls_backend(backend)
            .tls_system_roots(false)
            .tls_ca_pem(&pki.rogue_ca.cert);
        for (what, builder) in [("system roots", system), ("another CA", other)] {
            let result = tokio::time::timeout(NO_HANG, builder.connect())
                .await
                .unwrap_or_else(|_| panic!("{backend:?}, {what}: connect hangs"));
            let error = result.expect_err("an untrusted server certificate");
            let text = error.to_string().to_lowercase();
            assert!(
                text.contains("certificate") || text.contains("tls") || text.contains("ssl"),
                "{backend:?}, {what}: the error does not say what is wrong: {error}"
            );
        }
    }
}

/// What the crate logs, captured for one test, and a signal for each
/// write.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>, Arc<tokio::sync::Notify>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        self.1.notify_one();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the log holds `needle` (or the safety net's time).
    async fn wait_for(&self, needle: &str) -> bool {
        tokio::time::timeout(support::SIGNAL_TIMEOUT, async {
            while !self.text().contains(needle) {
                self.1.notified().await;
            }
        })
        .await
        .is_ok()
    }
}

/// `connect_lazy` on a server whose certificate is not trusted: requests
/// pass through to the origin, the failed connection is logged, and
/// nothing waits past the store timeout.
#[tokio::test]
async fn a_lazy_store_with_an_untrusted_server_logs_and_passes_through() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let server = tls_server(&pki, false);
    let store = RedisStore::builder(&url(&server))
        .tls_system_roots(false)
        .tls_ca_pem(&pki.rogue_ca.cert)
        .connect_lazy()
        .expect("valid settings");
    support::assert_passes_through(store, 6).await;
    // The connection task logs each failed attempt; the first comes within
    // the back-off's first step.
    assert!(
        logs.wait_for("cannot reach Redis").await,
        "no connection error was logged: {}",
        logs.text()
    );
    assert!(
        logs.text().to_lowercase().contains("certificate"),
        "the log does not name the certificate: {}",
        logs.text()
    );
}

#[tokio::test]
async fn tls_settings_without_tls_and_bad_pem_are_errors_at_connect() {
    let plain = RedisStore::builder("redis://127.0.0.1:1")
        .tls_ca_pem("-----BEGIN CERTIFICATE-----")
        .connect_lazy()
        .expect_err("TLS settings on a redis:// URL");
    assert!(plain.to_string().contains("rediss://"), "{plain}");
    for backend in BACKENDS {
        let bad = RedisStore::builder("rediss://127.0.0.1:1")
            .tls_backend(backend)
            .tls_client_identity("not a certificate", "not a key")
            .connect_lazy()
            .expect_err("a client identity that is not PEM");
        assert!(bad.to_string().contains("TLS"), "{backend:?}: {bad}");
    }
}
