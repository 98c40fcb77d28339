//! The channel to the SPIRE Server: TLS that trusts only the trust domain's X.509 authorities
//! and only the certificate whose one URI SAN is `spiffe://<td>/spire/server` (the server's SVID
//! has no DNS name, so WebPKI hostname checking cannot be used; the rule is
//! [`SpiffeServerVerifier`]'s), ALPN h2, and the agent SVID as the client certificate once
//! attested. A new agent SVID means a new channel (renewal activation).

use crate::bundle::verifier::SpiffeServerVerifier;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("the trust bundle has no usable X.509 authority: {0}")]
    Roots(String),
    #[error("agent SVID unusable as a client certificate: {0}")]
    ClientCert(String),
    #[error("bad server address {0:?}")]
    Address(String),
}

/// The agent's credential for mTLS.
pub(crate) struct ClientIdentity<'a> {
    pub chain: &'a [Vec<u8>],
    pub key_pkcs8: &'a [u8],
}

/// A rustls config for the server of `td`, trusting `roots` (DER), presenting `client` if given.
pub(crate) fn client_config(
    td: &TrustDomain,
    roots: &[Vec<u8>],
    client: Option<ClientIdentity<'_>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let server_id = SpiffeId::parse_workload(&format!("{}/spire/server", td.id_string()))
        .map_err(|e| TlsError::Roots(format!("server ID of {td}: {e}")))?;
    let verifier = SpiffeServerVerifier::new(roots, server_id, "the SPIRE trust bundle").map_err(TlsError::Roots)?;
    let verifier = Arc::new(verifier);
    let builder = rustls::ClientConfig::builder().dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = c.chain.iter().map(|d| CertificateDer::from(d.clone())).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pkcs8.to_vec()));
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::ClientCert(e.to_string()))?
        }
    };
    // gRPC servers (grpc-go ≥ 1.67) refuse TLS without ALPN h2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connecting channel to `addr` (host:port) over `config`.
pub(crate) fn channel(addr: &str, config: rustls::ClientConfig) -> Result<Channel, TlsError> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| TlsError::Address(addr.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port: u16 = port.parse().map_err(|_| TlsError::Address(addr.to_owned()))?;
    let server_name = ServerName::try_from(host.clone()).map_err(|_| TlsError::Address(addr.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| TlsError::Address(addr.to_owned()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let make = tower::service_fn(move |_: http::Uri| {
        let (connector, host, server_name) = (connector.clone(), host.clone(), server_name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(make))
}
