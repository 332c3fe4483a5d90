//! TLS for `rediss://` URLs: which roots a connection trusts, and the
//! client certificate it shows (mutual TLS), made into fred's
//! [`TlsConfig`](fred::types::config::TlsConfig) for rustls (feature
//! `tls-rustls`) or native-tls (feature `tls-native`).
//!
//! The invariant kept: a connection trusts the system's roots plus the
//! file that `SSL_CERT_FILE` names (the OpenSSL convention) plus the CAs
//! the builder was given, or only the latter when the system's roots are
//! turned off; and every bad certificate, key or file is a clear
//! [`Error::InvalidConfig`] when the store is built, before any connection.

#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
use crate::Error;

/// The TLS library a `rediss://` connection goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsBackend {
    /// rustls with the ring provider (feature `tls-rustls`): pure Rust, the
    /// same on every platform. The default when the feature is on.
    Rustls,
    /// The platform's library through native-tls (feature `tls-native`):
    /// OpenSSL on Linux, Secure Transport on macOS, SChannel on Windows.
    NativeTls,
}

impl Default for TlsBackend {
    fn default() -> Self {
        if cfg!(feature = "tls-rustls") || !cfg!(feature = "tls-native") {
            TlsBackend::Rustls
        } else {
            TlsBackend::NativeTls
        }
    }
}

/// What a TLS connection trusts and shows, as the builder was told.
#[derive(Clone)]
pub(super) struct TlsSettings {
    /// CA certificates (PEM, one or more) trusted besides the roots.
    pub(super) ca_pem: Vec<u8>,
    /// Whether the system's roots (and `SSL_CERT_FILE`) are trusted.
    pub(super) system_roots: bool,
    /// The client's certificate chain and private key (PEM), for mTLS.
    pub(super) identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The library the connection goes through.
    pub(super) backend: TlsBackend,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca_pem: Vec::new(),
            system_roots: true,
            identity: None,
            backend: TlsBackend::default(),
        }
    }
}

impl TlsSettings {
    /// Whether anything differs from the defaults (which a `redis://` URL,
    /// having no TLS, cannot use).
    pub(super) fn is_customised(&self) -> bool {
        !self.ca_pem.is_empty() || !self.system_roots || self.identity.is_some()
    }
}

/// The environment variable naming an extra CA file, as OpenSSL reads it.
#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// fred's TLS configuration for `settings`.
#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
pub(super) fn config(settings: &TlsSettings) -> Result<fred::types::config::TlsConfig, Error> {
    match settings.backend {
        #[cfg(feature = "tls-rustls")]
        TlsBackend::Rustls => rustls_connector(settings).map(Into::into),
        #[cfg(feature = "tls-native")]
        TlsBackend::NativeTls => native_connector(settings).map(Into::into),
        #[allow(unreachable_patterns)]
        other => Err(Error::InvalidConfig(format!(
            "TLS backend {other:?} needs the crate feature {}",
            match other {
                TlsBackend::Rustls => "tls-rustls",
                TlsBackend::NativeTls => "tls-native",
            }
        ))),
    }
}

/// The file `SSL_CERT_FILE` names, read; `None` when it is not set.
#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
fn ssl_cert_file() -> Result<Option<Vec<u8>>, Error> {
    let Some(path) = std::env::var_os(SSL_CERT_FILE) else {
        return Ok(None);
    };
    std::fs::read(&path).map(Some).map_err(|error| {
        Error::InvalidConfig(format!(
            "{SSL_CERT_FILE}={}: cannot read it: {error}",
            std::path::Path::new(&path).display()
        ))
    })
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
fn tls_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("TLS: {what}: {error}"))
}

#[cfg(feature = "tls-rustls")]
fn rustls_connector(settings: &TlsSettings) -> Result<fred::types::config::TlsConnector, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    if settings.system_roots {
        // The system's store, or the files SSL_CERT_FILE / SSL_CERT_DIR
        // name when set (rustls-native-certs reads them instead)...
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(target: "tower_cache_aside", %error, "a system root certificate could not be read");
        }
        roots.add_parsable_certificates(found.certs);
        // ...so with SSL_CERT_FILE set, the system's directories are added
        // here, as OpenSSL keeps its default directory beside the file.
        #[cfg(all(unix, not(target_os = "macos")))]
        if std::env::var_os(SSL_CERT_FILE).is_some() {
            for dir in openssl_probe::candidate_cert_dirs() {
                let found = rustls_native_certs::load_certs_from_paths(None, Some(dir));
                roots.add_parsable_certificates(found.certs);
            }
        }
        // Read (already, leniently, above) only to say clearly when the
        // variable names no readable file.
        ssl_cert_file()?;
    }
    add_pem_roots(&mut roots, &settings.ca_pem, "CA certificate")?;
    if roots.is_empty() {
        return Err(Error::InvalidConfig(
            "TLS: no root certificate to trust (the system has none, and none was given)".into(),
        ));
    }
    // ring, as fred's `enable-rustls-ring` builds it (aws-lc-rs, which has
    // the post-quantum key exchange this call is deprecated for lacking,
    // needs cmake and a C toolchain to build).
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_root_certificates(roots);
    let config = match &settings.identity {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error("client certificate", e))?;
            if chain.is_empty() {
                return Err(tls_error("client certificate", "no PEM certificate found"));
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error("client key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client certificate and key", e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config.into())
}

/// Adds every certificate of `pem` to `roots`; `what` names the source in
/// an error.
#[cfg(feature = "tls-rustls")]
fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8], what: &str) -> Result<(), Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut added = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| tls_error(what, e))?;
        roots.add(cert).map_err(|e| tls_error(what, e))?;
        added += 1;
    }
    if added == 0 && !is_blank(pem) {
        return Err(tls_error(what, "no PEM certificate found"));
    }
    Ok(())
}

/// Whether `pem` holds nothing but whitespace (no CA was given).
#[cfg(any(feature = "tls-rustls", feature = "tls-native"))]
fn is_blank(pem: &[u8]) -> bool {
    pem.iter().all(u8::is_ascii_whitespace)
}

#[cfg(feature = "tls-native")]
fn native_connector(settings: &TlsSettings) -> Result<fred::types::config::TlsConnector, Error> {
    use native_tls::{Certificate, Identity};

    let mut builder = native_tls::TlsConnector::builder();
    builder.disable_built_in_roots(!settings.system_roots);
    let mut add = |pem: &[u8], what: &str| -> Result<(), Error> {
        if is_blank(pem) {
            return Ok(());
        }
        let certs = Certificate::stack_from_pem(pem).map_err(|e| tls_error(what, e))?;
        if certs.is_empty() {
            return Err(tls_error(what, "no PEM certificate found"));
        }
        for cert in certs {
            builder.add_root_certificate(cert);
        }
        Ok(())
    };
    if !settings.system_roots && is_blank(&settings.ca_pem) {
        return Err(Error::InvalidConfig(
            "TLS: no root certificate to trust (system roots off, and none was given)".into(),
        ));
    }
    if settings.system_roots {
        // OpenSSL reads SSL_CERT_FILE itself; the platform libraries of
        // macOS and Windows do not.
        if let Some(file) = ssl_cert_file()? {
            add(&file, SSL_CERT_FILE)?;
        }
    }
    add(&settings.ca_pem, "CA certificate")?;
    if let Some((chain, key)) = &settings.identity {
        let identity =
            Identity::from_pkcs8(chain, key).map_err(|e| tls_error("client certificate", e))?;
        builder.identity(identity);
    }
    fred::types::config::TlsConnector::try_from(builder).map_err(|e| tls_error("connector", e))
}
