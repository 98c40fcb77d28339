//! TLS for the publication listeners: a certificate from the operator's PEM files, or an
//! X.509-SVID tessera mints for itself and swaps in on renewal.

use crate::config::publish::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    #[error("cannot read TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Config(String),
}

/// A TLS acceptor serving the certificate chain and key in `files`.
pub(crate) fn acceptor_from_files(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_err = |reason: String| TlsError::Cert { path: files.cert.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: files.key.display().to_string(), reason: e.to_string() })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The server certificate of a listener whose certificate changes at run time.
#[derive(Debug)]
pub(crate) struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    pub(crate) fn new(first: CertifiedKey) -> Arc<Self> {
        Arc::new(Self { current: RwLock::new(Arc::new(first)) })
    }
    pub(crate) fn replace(&self, next: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }
    pub(crate) fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A certified key from concatenated DER certificates (leaf first) and a PKCS#8 key.
pub(crate) fn certified_key(chain_der: &[u8], key_pkcs8: &[u8]) -> Result<CertifiedKey, TlsError> {
    let mut certs = Vec::new();
    let mut rest = chain_der;
    while !rest.is_empty() {
        let (next, _) =
            x509_parser::parse_x509_certificate(rest).map_err(|e| TlsError::Config(format!("own SVID: {e}")))?;
        let len = rest.len() - next.len();
        certs.push(CertificateDer::from(rest[..len].to_vec()));
        rest = next;
    }
    let key = PrivateKeyDer::Pkcs8(key_pkcs8.to_vec().into());
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(CertifiedKey::new(certs, signer))
}
