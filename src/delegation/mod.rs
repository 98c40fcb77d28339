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
//! connection's attestation briefly) → [`token`] (minting); [`details`] checks RFC 9396
//! `authorization_details`; [`approvals`] holds requests awaiting a human, [`notify`] tells the
//! `[approvals] notify_url` of each, and [`user_decision`] lets the user decide with their own
//! token on `[approvals] listen`; [`endpoint`] the HTTP handlers.

pub(crate) mod approvals;
mod decide;
pub(crate) mod details;
pub(crate) mod endpoint;
pub(crate) mod exchange;
pub(crate) mod notify;
pub(crate) mod request;
pub(crate) mod token;
pub(crate) mod trust;
pub(crate) mod user_decision;

use crate::caller::Pipeline;
use crate::config::Config;
use crate::config::approvals::ApprovalsListen;
use crate::events::Events;
use crate::issuer::KeySource;
use crate::net::http::{Limits, Method};
use crate::net::listener::EndpointError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Limits of the token socket. The body cap is far above the largest subject token (16 KiB) and
/// `authorization_details` (16 KiB) accepted, so a token of up to 1 MiB is answered with an
/// OAuth error and audited rather than cut off by HTTP; a body up to 32 MiB is read to its end
/// with only its first ~1 MiB kept, and answered with the OAuth error of the parameter that made
/// it long (larger bodies get a plain 413). The connection caps bound what bodies in flight can
/// hold (128 × ~1 MiB at worst, 16 per uid).
fn limits() -> Limits {
    Limits {
        max_connections: 128,
        max_connections_per_uid: 16,
        max_body: (1 << 20) + (64 << 10),
        max_drained_body: 32 << 20,
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
    let settings = config.approvals.as_ref();
    let notifier = match settings.and_then(|a| a.notify_url.clone()) {
        None => None,
        Some(url) => {
            let ca_file = settings.and_then(|a| a.notify_ca_file.as_deref());
            let n = notify::Notifier::new(url, ca_file).map_err(|e| EndpointError::Io {
                path: ca_file.map(Into::into).unwrap_or_default(),
                source: std::io::Error::other(e),
            })?;
            Some(Arc::new(n))
        }
    };
    let exchange = Arc::new(exchange::Exchange {
        pipeline: pipeline.clone(),
        ca: ca.clone(),
        approvals: approvals.clone(),
        events: events.clone(),
        notifier,
    });
    if let Some(listen) = settings.and_then(|a| a.listen.as_ref()) {
        let decisions = Arc::new(user_decision::UserDecisions {
            approvals: approvals.clone(),
            pipeline: pipeline.clone(),
            ca: ca.clone(),
            events: events.clone(),
        });
        serve_decisions(listen, decisions, shutdown.clone())?;
    }
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

/// Remove the token socket and the `[approvals] listen` Unix socket, if any (at shutdown).
pub(crate) fn remove_sockets(config: &Config) {
    config.delegation.iter().for_each(|d| drop(std::fs::remove_file(&d.token_socket_path)));
    if let Some(ApprovalsListen::Unix(p)) = config.approvals.as_ref().and_then(|a| a.listen.as_ref()) {
        let _ = std::fs::remove_file(p);
    }
}

/// Limits of the `[approvals] listen` socket: small bodiless requests, few at a time.
fn decision_limits() -> Limits {
    Limits {
        max_connections: 64,
        max_connections_per_uid: 16,
        max_connections_per_source: 16,
        reserved_for_new_sources: 8,
        max_body: 4096,
        ..Limits::default()
    }
}

/// Serve the users' decisions on `[approvals] listen` (loopback TCP or a Unix socket).
fn serve_decisions(
    listen: &ApprovalsListen,
    decisions: Arc<user_decision::UserDecisions>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EndpointError> {
    let handler = move |req| decisions.clone().handle(req);
    match listen {
        ApprovalsListen::Tcp(addr) => {
            let io_err = |source| EndpointError::Io { path: addr.to_string().into(), source };
            let std_listener = std::net::TcpListener::bind(addr).map_err(io_err)?;
            std_listener.set_nonblocking(true).map_err(io_err)?;
            let listener = tokio::net::TcpListener::from_std(std_listener).map_err(io_err)?;
            tokio::spawn(crate::net::http::serve_tcp(listener, None, Arc::new(handler), decision_limits(), shutdown));
        }
        ApprovalsListen::Unix(path) => {
            // 0666: any local process may bring a user's token; the token decides.
            let listener = crate::net::listener::bind(path, 0o666)?;
            tokio::spawn(crate::net::http::serve_unix(listener, Arc::new(handler), decision_limits(), shutdown));
        }
    }
    tracing::info!(listen = ?listen, "serving users' approval decisions");
    Ok(())
}
