//! TLS for the publication listeners and the guards: a certificate from the operator's PEM
//! files, or an X.509-SVID tessera mints for itself ([`own_svid`]) and swaps in on renewal (at
//! half its life, and whenever the CA's keys change).

use crate::clock::Clock;
use crate::config::publish::TlsFiles;
use crate::issuer::KeySource;
use crate::registry::Entry;
use crate::spiffe_id::SpiffeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How long a listener's own SVID lives; renewed at half of it, and when the CA rotates.
const OWN_SVID_TTL: Duration = Duration::from_secs(3600);
/// A retry after a failed renewal (the current SVID keeps serving meanwhile).
const RETRY: Duration = Duration::from_secs(10);

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

/// The X.509-SVID `id` of a listener of tessera's own (`what`, for logs), minted now by the
/// local CA and renewed in the background until `shutdown`: at half its life, and at once when
/// `ca_changes` moves (a new authority: the SVID never outlives the key that signed it).
pub(crate) fn own_svid(
    what: &'static str,
    ca: Arc<dyn KeySource>,
    id: SpiffeId,
    mut ca_changes: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<SwappableCert>, TlsError> {
    let (first, mut renew_at) = mint_own(what, &*ca, &id, clock.now())?;
    let cert = SwappableCert::new(first);
    let swap = cert.clone();
    tokio::spawn(async move {
        loop {
            let wait = renew_at.duration_since(clock.now()).unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = ca_changes.changed() => if r.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            match mint_own(what, &*ca, &id, clock.now()) {
                Ok((key, at)) => {
                    swap.replace(key);
                    renew_at = at;
                }
                Err(e) => {
                    tracing::error!(error = %e, listener = what, "own SVID renewal failed; retrying");
                    renew_at = clock.now() + RETRY;
                }
            }
        }
    });
    Ok(cert)
}

/// An X.509-SVID for `id`, minted at `now`, and when to renew it.
fn mint_own(
    what: &'static str,
    ca: &dyn KeySource,
    id: &SpiffeId,
    now: SystemTime,
) -> Result<(CertifiedKey, SystemTime), TlsError> {
    let auth = ca.authorities();
    let signer = auth.x509_signer(now).ok_or_else(|| TlsError::Config("no X.509 authority signs now".into()))?;
    let entry = Entry {
        spiffe_id: id.clone(),
        selectors: Default::default(),
        x509_svid_ttl: OWN_SVID_TTL,
        jwt_svid_ttl: OWN_SVID_TTL,
        dns_names: vec![],
        hint: None,
        federates_with: vec![],
        owner: None,
        metadata: Default::default(),
        retired: false,
        delegation: None,
    };
    let svid = crate::svid::x509::mint(&entry, signer, now).map_err(|e| TlsError::Config(e.to_string()))?;
    let life = svid.not_after.duration_since(now).unwrap_or_default();
    let key = certified_key(&svid.chain_der, svid.key_pkcs8())?;
    tracing::info!(spiffe_id = %id, serial = %svid.serial_hex, listener = what, "own SVID minted");
    Ok((key, now + life / 2))
}
