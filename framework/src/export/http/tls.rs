//! HTTPS for the daemon's HTTP servers (`ssl_auth = "on"`): rustls on the `ring` provider,
//! TLS 1.3 and 1.2 (rustls offers only forward-secret AEAD suites for 1.2), ALPN `http/1.1`,
//! and with `ca_file` a client certificate signed by one of its CAs is required (mTLS).
//!
//! [`ServerTls::load`] reads the files through [`trusted_file`] (owner and mode rules) and
//! reports which config key is wrong, so `--check-config` and the daemon start refuse the same
//! files with the same message.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::trusted_file::{self, Access, MAX_PEM_BYTES};
use crate::config::Tls;

/// The protocol announced by ALPN: the servers speak HTTP/1.1 only.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A loaded server certificate and key, and the client CAs if any; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    client_auth: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Why a server's TLS settings could not be loaded, and which of its keys is to blame.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    /// The key within the server's section: `private_key`, `cert_file` or `ca_file`.
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        key,
        message: message.into(),
    }
}

impl ServerTls {
    /// Read and check the files of `tls` and build the server configuration.
    pub fn load(tls: &Tls) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(&tls.cert_file, "cert_file")?;
        let key = read_key(&tls.private_key)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err("private_key", format!("TLS setup: {e}")))?;
        let builder = match &tls.ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for (i, cert) in read_certs(ca, "ca_file")?.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        err(
                            "ca_file",
                            format!("{}: certificate {}: {e}", ca.display(), i + 1),
                        )
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| err("ca_file", format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => err(
                "private_key",
                format!(
                    "{} does not belong to the first certificate of {}",
                    tls.private_key.display(),
                    tls.cert_file.display()
                ),
            ),
            e => err(
                "private_key",
                format!("{}: unusable key: {e}", tls.private_key.display()),
            ),
        })?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_auth: tls.ca_file.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }

    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read_file(
    path: &std::path::Path,
    key: &'static str,
    access: Access,
) -> Result<Vec<u8>, TlsError> {
    trusted_file::read(path, access, MAX_PEM_BYTES).map_err(|e| err(key, e.to_string()))
}

/// Every `CERTIFICATE` block of a PEM file, in order (a chain: leaf first).
fn read_certs(
    path: &std::path::Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, key, Access::Public)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                key,
                format!("{}: bad PEM: {}", path.display(), pem_error(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            key,
            format!(
                "{}: no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
/// SEC1 (`EC PRIVATE KEY`); RSA, ECDSA P-256/P-384 or Ed25519.
fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "private_key", Access::Secret)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let what = match e {
            pem::Error::NoItemsFound if contains(&pem, b"ENCRYPTED PRIVATE KEY") => {
                "the key is encrypted; store it unencrypted (mode 0600)".to_string()
            }
            pem::Error::NoItemsFound => "no private key (expected a PEM \"BEGIN PRIVATE KEY\", \
                                         \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)"
                .to_string(),
            e => format!("bad PEM: {}", pem_error(&e)),
        };
        err("private_key", format!("{}: {what}", path.display()))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A PEM error without file contents (`Debug` of some variants carries bytes).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line".to_string(),
        pem::Error::Base64Decode(_) => "invalid base64".to_string(),
        pem::Error::NoItemsFound => "nothing found".to_string(),
        _ => "unreadable".to_string(),
    }
}
