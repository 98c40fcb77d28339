//! `tls = "mtls"`: a guard's TCP listener serves TLS 1.3 with an X.509-SVID the daemon mints for
//! the guard (renewed at half-life and when the CA's keys change) and requires the client's
//! X.509-SVID. The client's leaf must carry exactly one URI SAN, a SPIFFE ID with a path, and
//! chain to the bundle of *its* trust domain: this node's, or a federated one the node holds (a
//! partner's CA cannot vouch for an ID of ours). That ID authenticates the caller
//! ([`super::auth`] combines it with an optional bearer token).

use crate::bundle::verifier::{client_leaf_id, refuse};
use crate::caller::Pipeline;
use crate::issuer::Issuer;
use crate::publish::tls::SwappableCert;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A trust domain's roots as last seen, and the chain verifier built on them.
type Cached = (Vec<Vec<u8>>, Arc<dyn ClientCertVerifier>);

/// Verifies a client's X.509-SVID against the bundle of its own trust domain, read at each
/// handshake (so a CA rotation or a federated bundle's refresh counts at once).
pub(crate) struct SvidClientVerifier {
    issuer: Arc<dyn Issuer>,
    pipeline: Arc<Pipeline>,
    provider: Arc<CryptoProvider>,
    cache: Mutex<HashMap<TrustDomain, Cached>>,
}

impl std::fmt::Debug for SvidClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidClientVerifier").field("trust_domain", self.issuer.trust_domain()).finish_non_exhaustive()
    }
}

impl SvidClientVerifier {
    pub(crate) fn new(issuer: Arc<dyn Issuer>, pipeline: Arc<Pipeline>) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Self { issuer, pipeline, provider, cache: Mutex::new(HashMap::new()) }
    }

    /// The chain verifier for `td`'s bundle now (rebuilt only when its roots changed).
    fn chain_verifier(&self, td: &TrustDomain) -> Result<Arc<dyn ClientCertVerifier>, String> {
        let local;
        let policy;
        let roots: &[Vec<u8>] = if td == self.issuer.trust_domain() {
            local = self.issuer.bundles();
            local.x509.certs()
        } else {
            policy = self.pipeline.policy();
            match policy.federated.get(td) {
                Some(b) => b.x509.certs(),
                None => return Err(format!("this node holds no trust bundle for {td}")),
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, v)) = cache.get(td)
            && seen.as_slice() == roots
        {
            return Ok(v.clone());
        }
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(roots.iter().map(|r| CertificateDer::from(r.as_slice()).into_owned()));
        if store.is_empty() {
            return Err(format!("the bundle of {td} has no usable root"));
        }
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
            .map_err(|e| format!("the bundle of {td}: {e}"))?;
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(td.clone(), (roots.to_vec(), v.clone()));
        Ok(v)
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundles change at run time; clients send their SVID without hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let id = client_leaf_id(end_entity).map_err(refuse)?;
        let td = id.trust_domain();
        let chain = self.chain_verifier(td).map_err(|e| refuse(format!("client certificate of {id}: {e}")))?;
        chain.verify_client_cert(end_entity, intermediates, now).map_err(|e| {
            let why = match e {
                Error::InvalidCertificate(c) => format!("{c}"),
                other => other.to_string(),
            };
            refuse(format!("the client certificate of {id} does not chain to the bundle of {td}: {why}"))
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS 1.3 acceptor of an mTLS guard: its own SVID, the client's required.
pub(crate) fn acceptor(
    cert: Arc<SwappableCert>,
    verifier: Arc<SvidClientVerifier>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The verified client's SPIFFE ID (None: no certificate, which the verifier never lets by).
pub(crate) fn client_id(conn: &rustls::ServerConnection) -> Option<SpiffeId> {
    conn.peer_certificates().and_then(|c| c.first()).and_then(|leaf| client_leaf_id(leaf).ok())
}

/// A handshake refused for the client's certificate (none, or not an SVID we trust), as
/// opposed to a connection that simply went away: the former is audited.
pub(crate) fn refused_certificate(e: &std::io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<Error>()?;
    matches!(tls, Error::InvalidCertificate(_) | Error::NoCertificatesPresented).then(|| tls.to_string())
}
