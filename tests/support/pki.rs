//! Certificates for the TLS tests, made by the test (rcgen) and written to
//! a directory of its own that is removed on drop: a CA, a server
//! certificate for `127.0.0.1` and `localhost` signed by it, a client
//! certificate signed by it, and a second, unrelated CA with a client
//! certificate of its own (what a server or a client must reject).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, as PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The certificates of one TLS test, and the directory holding their files.
pub struct Pki {
    dir: PathBuf,
    /// The CA the server's and the client's certificates are signed by.
    pub ca: Pem,
    pub server: Pem,
    pub client: Pem,
    /// A CA that signed nothing the server knows.
    pub rogue_ca: Pem,
    /// A client certificate signed by `rogue_ca`.
    pub rogue_client: Pem,
}

struct Authority {
    cert: Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("a self-signed CA");
    Authority { cert, key }
}

fn leaf(by: &Authority, names: &[&str], usage: &[ExtendedKeyUsagePurpose]) -> Pem {
    let key = KeyPair::generate().expect("a leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "tower-cache-aside test");
    params.extended_key_usages = usage.to_vec();
    let cert = params
        .signed_by(&key, &by.cert, &by.key)
        .expect("a signed leaf");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

impl Pki {
    /// Makes every certificate and writes them under a new directory.
    pub fn new() -> Pki {
        let ca = authority("tower-cache-aside test CA");
        let rogue = authority("someone else's CA");
        // The server's certificate is a client's too: cluster nodes and
        // replicas show it to each other.
        let server = leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let client = leaf(&ca, &["client"], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let rogue_client = leaf(&rogue, &["client"], &[ExtendedKeyUsagePurpose::ClientAuth]);
        let dir = std::env::temp_dir().join(format!(
            "tca-pki-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let pki = Pki {
            dir,
            ca: Pem {
                cert: ca.cert.pem(),
                key: ca.key.serialize_pem(),
            },
            server,
            client,
            rogue_ca: Pem {
                cert: rogue.cert.pem(),
                key: rogue.key.serialize_pem(),
            },
            rogue_client,
        };
        for (name, text) in [
            ("ca.pem", &pki.ca.cert),
            ("server.pem", &pki.server.cert),
            ("server.key", &pki.server.key),
        ] {
            std::fs::write(pki.dir.join(name), text).expect("write a certificate file");
        }
        pki
    }

    /// A file of the directory (`ca.pem`, `server.pem`, `server.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis-server` arguments for a TLS-only server on `port` with this
    /// server certificate; `auth_clients`: whether it asks clients for a
    /// certificate signed by the CA.
    pub fn server_args(&self, port: u16, auth_clients: bool) -> Vec<String> {
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            self.path("server.pem").display().to_string(),
            "--tls-key-file".into(),
            self.path("server.key").display().to_string(),
            "--tls-ca-cert-file".into(),
            self.path("ca.pem").display().to_string(),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
