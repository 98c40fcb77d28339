//! Delegation: an attested agent acting for a user gets a short, narrowed, audited
//! on-behalf-of token (RFC 8693 token exchange on the token socket).
//!
//! The caller needs no secret: it is identified by peer credentials and attested exactly as on
//! the Workload API socket ([`crate::caller::Pipeline`]), and must match an entry with
//! `[entries.delegation]`. The subject token is a user's token from a configured identity
//! provider, or a token tessera issued to an earlier agent (`act` chain). The issued token is
//! `at+jwt` signed by a key of its own kind ([`crate::ca::Authorities::delegation`]).
//!
//! The policy types live with the registry ([`crate::registry::delegation`]), the audit record in
//! the event spine ([`crate::events::delegation`]). Here: [`request`] (the form, OAuth errors) →
//! [`trust`] (subject token) → [`exchange`] (the decision; the caller pipeline reuses a
//! connection's attestation briefly) → [`token`] (minting); [`approvals`] holds requests awaiting
//! a human; [`endpoint`] the HTTP handlers.

pub(crate) mod approvals;
mod decide;
pub(crate) mod endpoint;
pub(crate) mod exchange;
pub(crate) mod request;
pub(crate) mod token;
pub(crate) mod trust;

use crate::caller::Pipeline;
use crate::config::Config;
use crate::events::Events;
use crate::issuer::KeySource;
use crate::net::http::{Limits, Method};
use crate::net::listener::EndpointError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Limits of the token socket. The body cap is far above the largest subject token accepted
/// (16 KiB), so a token of up to 1 MiB is answered with an OAuth error and audited rather than
/// cut off by HTTP (larger bodies get a plain 413); the connection caps bound what bodies in
/// flight can hold (128 × ~1 MiB at worst, 16 per uid).
fn limits() -> Limits {
    Limits {
        max_connections: 128,
        max_connections_per_uid: 16,
        max_body: (1 << 20) + (64 << 10),
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        ..Limits::default()
    }
}

/// Serve the token socket and register the approval commands, when delegation is configured.
pub(crate) fn start(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    ca: &Arc<dyn KeySource>,
    events: &Events,
    admin: &mut crate::net::http::Routes,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EndpointError> {
    let Some(d) = &config.delegation else { return Ok(()) };
    let approvals = Arc::new(approvals::Approvals::new(pipeline.clock.clone()));
    let exchange = Arc::new(exchange::Exchange {
        pipeline: pipeline.clone(),
        ca: ca.clone(),
        approvals: approvals.clone(),
        events: events.clone(),
    });
    // 0777 like the Workload API socket: attestation decides who gets what.
    let listener = crate::net::listener::bind(&d.token_socket_path, 0o777)?;
    let a = approvals.clone();
    admin.add(Method::GET, "/approvals", move |_req| endpoint::list(a.clone()));
    let (a, p, ev) = (approvals, pipeline.clone(), events.clone());
    admin.add(Method::POST, "/approvals/", move |req| endpoint::decide(a.clone(), p.clone(), ev.clone(), req));
    let handler = move |req| endpoint::token_socket(exchange.clone(), req);
    tokio::spawn(crate::net::http::serve_unix(listener, Arc::new(handler), limits(), shutdown));
    tracing::info!(socket = %d.token_socket_path.display(), issuers = d.issuers.len(), "serving RFC 8693 token exchange");
    Ok(())
}
