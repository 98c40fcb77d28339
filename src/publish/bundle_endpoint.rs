//! The SPIFFE bundle endpoint (SPIFFE_Trust_Domain_and_Bundle.md §5): our trust bundle as a
//! SPIFFE bundle document, over TLS authenticated by an X.509-SVID we mint for ourselves
//! (`https_spiffe`) or by the operator's Web PKI certificate (`https_web`). WIT keys are not
//! published here: spire-server 1.13 refuses a whole bundle holding a key use it does not know.

use super::PublishError;
use super::tls::{self, SwappableCert};
use crate::ca::Authorities;
use crate::clock::Clock;
use crate::config::publish::{BundleEndpoint, EndpointProfile};
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Method, Request};
use crate::registry::Entry;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How long the endpoint's own SVID lives; renewed at half of it, and when the CA rotates.
const ENDPOINT_SVID_TTL: Duration = Duration::from_secs(3600);
/// A retry after a failed renewal (the current SVID keeps serving meanwhile).
const RETRY: Duration = Duration::from_secs(10);

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
            let (first, renew_at) = own_svid(&*ca, spiffe_id, clock.now())?;
            let cert = SwappableCert::new(first);
            spawn_renewal(
                cert.clone(),
                ca.clone(),
                spiffe_id.clone(),
                renew_at,
                ca_generation.clone(),
                shutdown.clone(),
                clock.clone(),
            );
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

/// An X.509-SVID for the endpoint itself, minted at `now`, and when to renew it.
fn own_svid(
    ca: &dyn KeySource,
    id: &SpiffeId,
    now: SystemTime,
) -> Result<(rustls::sign::CertifiedKey, SystemTime), PublishError> {
    let auth = ca.authorities();
    let signer = auth.x509_signer(now).ok_or_else(|| tls::TlsError::Config("no X.509 authority signs now".into()))?;
    let entry = Entry {
        spiffe_id: id.clone(),
        selectors: Default::default(),
        x509_svid_ttl: ENDPOINT_SVID_TTL,
        jwt_svid_ttl: ENDPOINT_SVID_TTL,
        dns_names: vec![],
        hint: None,
        federates_with: vec![],
        owner: None,
        metadata: Default::default(),
        retired: false,
        delegation: None,
    };
    let svid = crate::svid::x509::mint(&entry, signer, now).map_err(|e| tls::TlsError::Config(e.to_string()))?;
    let life = svid.not_after.duration_since(now).unwrap_or_default();
    let key = tls::certified_key(&svid.chain_der, svid.key_pkcs8())?;
    tracing::info!(spiffe_id = %id, serial = %svid.serial_hex, "bundle endpoint SVID minted");
    Ok((key, now + life / 2))
}

fn spawn_renewal(
    cert: Arc<SwappableCert>,
    ca: Arc<dyn KeySource>,
    id: SpiffeId,
    mut renew_at: SystemTime,
    mut ca_generation: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) {
    tokio::spawn(async move {
        loop {
            let wait = renew_at.duration_since(clock.now()).unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // A new authority: re-issue so the SVID never outlives the one that signed it.
                r = ca_generation.changed() => if r.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            match own_svid(&*ca, &id, clock.now()) {
                Ok((key, at)) => {
                    cert.replace(key);
                    renew_at = at;
                }
                Err(e) => {
                    tracing::error!(error = %e, "bundle endpoint SVID renewal failed; retrying");
                    renew_at = clock.now() + RETRY;
                }
            }
        }
    });
}
