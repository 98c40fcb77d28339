//! What tessera publishes over the network: OIDC discovery with the JWKS ([`oidc`]) and the SPIFFE
//! bundle endpoint ([`bundle_endpoint`]), each on its own TCP listener through `crate::net::http`.
//! [`spawn`] is the one call the daemon makes.

pub(crate) mod bundle_endpoint;
pub(crate) mod oidc;
pub(crate) mod tls;

use crate::clock::Clock;
use crate::config::Config;
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Method, Request};
use oidc::DelegationKeys;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PublishError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen { addr: std::net::SocketAddr, what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Start the `[oidc]` and `[bundle_endpoint]` listeners the config asks for, and register the
/// admin route `GET /oidc` (the documents, for `tessera export oidc`). With `delegation_keys`
/// (delegation is on), the delegated-token issuer's documents are published too, apart from the
/// JWT-SVID ones. `clock`: when the bundle endpoint's own SVID is minted and renewed.
pub(crate) async fn spawn(
    config: &Config,
    ca: Arc<dyn KeySource>,
    ca_generation: watch::Receiver<u64>,
    delegation_keys: Option<DelegationKeys>,
    admin_routes: &mut crate::net::http::Routes,
    shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) -> Result<(), PublishError> {
    let issuer = config.jwt_issuer.clone();
    // The delegation issuer's discovery document, when there are delegated tokens and an issuer.
    let delegation =
        issuer.as_deref().zip(delegation_keys).map(|(i, keys)| (oidc::discovery(&oidc::delegation_issuer(i)), keys));
    {
        let (ca, issuer, delegation) = (ca.clone(), issuer.clone(), delegation.clone());
        admin_routes.add(Method::GET, "/oidc", move |_req: Request| {
            let auth = ca.authorities();
            let body = serde_json::json!({
                "discovery": issuer.as_deref().map(oidc::discovery),
                "jwks": oidc::jwks(&auth),
                "delegation": delegation.as_ref().map(|(doc, keys)| serde_json::json!({
                    "discovery": doc,
                    "jwks": oidc::delegation_jwks(keys),
                })),
                "next_publication": oidc::next_publication(&auth).map(crate::clock::unix_secs),
            });
            async move { http::json(Answer::Ok, &body) }
        });
    }
    if let Some(o) = &config.oidc {
        let listener = tokio::net::TcpListener::bind(o.listen).await.map_err(|source| PublishError::Listen {
            addr: o.listen,
            what: "oidc",
            source,
        })?;
        let acceptor = match &o.tls {
            Some(files) => Some(tls::acceptor_from_files(files)?),
            None => None,
        };
        let ca = ca.clone();
        let handler = move |req: Request| {
            let response = match (req.method == Method::GET, req.path()) {
                (false, _) => http::method_not_allowed(),
                (true, oidc::DISCOVERY_PATH) => match &issuer {
                    Some(i) => cacheable(http::json(Answer::Ok, &oidc::discovery(i))),
                    None => http::not_found(),
                },
                (true, oidc::JWKS_PATH) => cacheable(http::json(Answer::Ok, &oidc::jwks(&ca.authorities()))),
                (true, oidc::DELEGATION_DISCOVERY_PATH) => match &delegation {
                    Some((doc, _)) => cacheable(http::json(Answer::Ok, doc)),
                    None => http::not_found(),
                },
                (true, oidc::DELEGATION_JWKS_PATH) => match &delegation {
                    Some((_, keys)) => cacheable(http::json(Answer::Ok, &oidc::delegation_jwks(keys))),
                    None => http::not_found(),
                },
                _ => http::not_found(),
            };
            async move { response }
        };
        tracing::info!(listen = %o.listen, tls = o.tls.is_some(), "serving OIDC discovery and the JWKS");
        tokio::spawn(http::serve_tcp(listener, acceptor, Arc::new(handler), public_limits(), shutdown.clone()));
    }
    if let Some(b) = &config.bundle_endpoint {
        bundle_endpoint::spawn(b, config.trust_domain.clone(), ca, ca_generation, shutdown, clock).await?;
    }
    Ok(())
}

/// Anyone on the network may call these: small requests only, a short deadline, and the
/// default per-source caps (a quarter of the 1,024 connections per source, an eighth kept for
/// sources holding none; verifiers behind one NAT share a source).
fn public_limits() -> http::Limits {
    http::Limits { max_body: 1024, ..http::Limits::default() }
}

/// Verifiers cache keys; a short max-age lets a new key reach them well before it signs.
fn cacheable(mut r: http::Response) -> http::Response {
    r.headers_mut().insert(::http::header::CACHE_CONTROL, ::http::HeaderValue::from_static("public, max-age=60"));
    r
}
