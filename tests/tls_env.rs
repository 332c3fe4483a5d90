//! `SSL_CERT_FILE`: a `rediss://` store made with no TLS settings trusts
//! the CA file the variable names (the OpenSSL convention), through both
//! TLS backends, and a variable naming no file is a clear error. One test
//! in a binary of its own, because it sets the process's environment.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use tower_cache_aside::store::TlsBackend;
use tower_cache_aside::{Cache, RedisStore};

use support::pki::Pki;
use support::RedisServer;

#[tokio::test]
async fn ssl_cert_file_names_a_ca_the_store_trusts() {
    let pki = Pki::new();
    let server = RedisServer::launch_with(|port| pki.server_args(port, false));
    let url = format!("rediss://127.0.0.1:{}", server.port());
    for backend in [TlsBackend::Rustls, TlsBackend::NativeTls] {
        // Without the variable, the test's CA is no root of the system's.
        std::env::remove_var("SSL_CERT_FILE");
        let untrusted = RedisStore::builder(&url).tls_backend(backend).connect();
        let untrusted = tokio::time::timeout(Duration::from_secs(30), untrusted)
            .await
            .expect("no hang");
        assert!(untrusted.is_err(), "{backend:?}: trusted without the CA");

        std::env::set_var("SSL_CERT_FILE", pki.path("ca.pem"));
        let store = RedisStore::builder(&url)
            .tls_backend(backend)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{backend:?} with SSL_CERT_FILE: {e}"));
        let cache = Cache::builder(store).build().unwrap();
        let key = format!("ssl-cert-file:{backend:?}");
        let fetched: Option<String> = cache
            .get_or_fetch(&key, Duration::from_secs(60), || async {
                Ok::<_, Infallible>(Some("fetched".to_owned()))
            })
            .await
            .unwrap();
        assert_eq!(fetched.as_deref(), Some("fetched"));
        let cached: Option<String> = cache
            .get_or_fetch(&key, Duration::from_secs(60), || async {
                Ok::<_, Infallible>(Some("fetched again".to_owned()))
            })
            .await
            .unwrap();
        assert_eq!(
            cached.as_deref(),
            Some("fetched"),
            "{backend:?}: read back over TLS"
        );

        std::env::set_var("SSL_CERT_FILE", pki.dir().join("missing.pem"));
        let missing = RedisStore::builder(&url)
            .tls_backend(backend)
            .connect_lazy()
            .expect_err("a variable naming no file");
        assert!(missing.to_string().contains("SSL_CERT_FILE"), "{missing}");
    }
    std::env::remove_var("SSL_CERT_FILE");
}
