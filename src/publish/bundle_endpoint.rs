//! The SPIFFE bundle endpoint (SPIFFE_Trust_Domain_and_Bundle.md §5): our trust bundle as a
//! SPIFFE bundle document, over TLS authenticated by an X.509-SVID we mint for ourselves
//! (`https_spiffe`) or by the operator's Web PKI certificate (`https_web`). WIT keys are not
//! published here: spire-server 1.13 refuses a whole bundle holding a key use it does not know.

use super::PublishError;
use super::tls;
use crate::ca::Authorities;
use crate::clock::Clock;
use crate::config::publish::{BundleEndpoint, EndpointProfile};
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Method, Request};
use crate::spiffe_id::TrustDomain;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// `spiffe_refresh_hint`: a successor key is published a tenth of the CA TTL before it signs,
/// so partners polling at this interval always hold it in time.
pub(crate) fn refresh_hint(ca_ttl: Duration) -> u64 {
    (ca_ttl / 20).as_secs().clamp(1, 300)
}

/// The document: x509-svid and jwt-svid keys, `spiffe_sequence`, `spiffe_refresh_hint`.
pub(crate) fn document(auth: &Authorities, sequence: u64, hint: u64) -> serde_json::Value {
    let mut doc = crate::bundle::federation::spiffe_bundle_json(auth, sequence);
    doc["spiffe_refresh_hint"] = serde_json::json!(hint);
    doc
}

pub(super) async fn spawn(
    config: &BundleEndpoint,
    trust_domain: TrustDomain,
    ca: Arc<dyn KeySource>,
    mut ca_generation: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) -> Result<(), PublishError> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|source| PublishError::Listen {
        addr: config.listen,
        what: "bundle_endpoint",
        source,
    })?;
    let acceptor = match &config.profile {
        EndpointProfile::HttpsWeb(files) => tls::acceptor_from_files(files)?,
        EndpointProfile::HttpsSpiffe { spiffe_id } => {
            let cert = tls::own_svid(
                "bundle endpoint",
                ca.clone(),
                spiffe_id.clone(),
                ca_generation.clone(),
                shutdown.clone(),
                clock.clone(),
            )?;
            cert.acceptor()
        }
    };
    // The sequence grows whenever the bundle changes: the time of the change (a restart counts
    // as one), plus the number of changes seen since, so two changes in one second still differ.
    let sequence = Arc::new(AtomicU64::new(crate::clock::unix_secs(clock.now())));
    {
        let sequence = sequence.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = ca_generation.changed() => if r.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                let now = crate::clock::unix_secs(clock.now());
                let _ = sequence.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some(now.max(s + 1)));
            }
        });
    }
    let hint = refresh_hint(ca.key_ttl());
    let handler = move |req: Request| {
        let response = if req.method != Method::GET {
            http::method_not_allowed()
        } else {
            let doc = document(&ca.authorities(), sequence.load(Ordering::SeqCst), hint);
            http::json(Answer::Ok, &doc)
        };
        async move { response }
    };
    tracing::info!(listen = %config.listen, trust_domain = %trust_domain, "serving the SPIFFE bundle endpoint");
    tokio::spawn(http::serve_tcp(listener, Some(acceptor), Arc::new(handler), super::public_limits(), shutdown));
    Ok(())
}
