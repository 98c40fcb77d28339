//! Fetching a partner's SPIFFE bundle endpoint (SPIFFE_Trust_Domain_and_Bundle.md §5): one GET
//! over TLS, authenticated as the profile says, with a deadline and a body cap, and the document
//! checked before anyone sees it.

use super::FederatedBundle;
use super::endpoint::PartnerProfile;
use super::verifier::SpiffeServerVerifier;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Largest bundle document accepted. SPIRE's are a few KiB; a partner sending more is broken or hostile.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Connect, handshake, request and body together.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A fetched, checked bundle with what the partner says about it.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub bundle: FederatedBundle,
    pub refresh_hint: Option<Duration>,
    pub sequence: Option<u64>,
    /// The document as served (kept on disk as the last good bundle).
    pub raw: Vec<u8>,
}

/// Why a fetch gave no bundle; the current one stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("not a valid SPIFFE bundle: {0}")]
    Malformed(String),
    #[error("no trusted X.509 authority of the partner to authenticate its endpoint")]
    NoAnchor,
    #[error("an X.509 authority of the partner's bundle in force is unusable as a trust anchor: {0}")]
    Anchor(String),
}

/// GET `url`, authenticated by `tls`, and check the document.
pub(crate) async fn fetch(url: &http::Uri, tls: Arc<rustls::ClientConfig>) -> Result<Fetched, FetchError> {
    tokio::time::timeout(TIMEOUT, fetch_inner(url, tls)).await.map_err(|_| FetchError::Timeout(TIMEOUT))?
}

async fn fetch_inner(url: &http::Uri, tls: Arc<rustls::ClientConfig>) -> Result<Fetched, FetchError> {
    let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FetchError::Connect(format!("{host}:{port}"), e))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| FetchError::Http(format!("host {host:?}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(FetchError::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(&host).to_owned();
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| FetchError::Http(e.to_string()))?;
        if !crate::net::http::Answer::Ok.is(response.status()) {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Http(e.to_string())
            }
        })?;
        Ok(body.to_bytes())
    }
    .await;
    driver.abort();
    let raw = result?.to_vec();
    let (bundle, refresh_hint, sequence) =
        super::federation::parse_endpoint_document(&raw).map_err(FetchError::Malformed)?;
    Ok(Fetched { bundle, refresh_hint, sequence, raw })
}

/// The TLS client config for one fetch: the partner's current X.509 authorities and endpoint ID
/// (`https_spiffe`), or the system's Web PKI roots (`https_web`).
pub(crate) fn client_config(
    profile: &PartnerProfile,
    current: Option<&FederatedBundle>,
) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let mut config = match profile {
        PartnerProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            let roots = current.map(|b| b.x509.certs()).unwrap_or_default();
            if roots.is_empty() {
                return Err(FetchError::NoAnchor);
            }
            let verifier = SpiffeServerVerifier::new(roots, endpoint_spiffe_id.clone(), "the partner's bundle")
                .map_err(FetchError::Anchor)?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
        PartnerProfile::HttpsWeb => builder.with_root_certificates(web_roots()).with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's CA certificates: `SSL_CERT_FILE`, else the Debian/Fedora bundle paths.
fn web_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"].map(Into::into));
    for path in candidates {
        if let Ok(iter) = CertificateDer::pem_file_iter(&path) {
            for cert in iter.flatten() {
                let _ = store.add(cert);
            }
            if !store.is_empty() {
                break;
            }
        }
    }
    store
}
