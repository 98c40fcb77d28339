//! Guards (`[[guard]]`): the point where an agent's action on a protected service is decided.
//! Each guard is an HTTP/1.1 reverse proxy on a loopback address or a Unix socket in front of
//! one upstream, or, with `tls = "mtls"` ([`mtls`]), on a TCP address serving TLS 1.3 with an
//! SVID of its own and requiring the client's X.509-SVID. It authenticates every request by its
//! bearer token ([`auth`]: a tessera delegated token or a JWT-SVID for the guard's audience,
//! verified offline) or the client's SVID (a token optional, naming the same agent), decides it with
//! the `[policy]` set (`Action::"serve"` on `Guard::"<name>"`, or on `Tool::"<tool>"` for an MCP
//! `tools/call`), forwards what is permitted without the token (the MCP spec forbids token
//! passthrough), filters MCP `tools/list` answers ([`filter`]) and writes one `guard_action`
//! audit line per action. Without `[policy]`, a valid token for the audience is enough.

mod action;
pub(crate) mod auth;
mod filter;
mod mtls;
mod rpc;
mod server;

use crate::caller::Pipeline;
use crate::config::guard::{Bind, Guard};
use crate::events::Events;
use crate::issuer::{Issuer, KeySource};
use std::sync::Arc;
use tokio::sync::watch;

pub(crate) type BoxError = crate::gateway::body::BoxError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    #[error("guard {name:?}: {source}")]
    Socket { name: String, source: crate::net::listener::EndpointError },
    #[error("guard {name:?}: cannot listen on {addr}: {source}")]
    Listen { name: String, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("guard {name:?}: tls = \"mtls\": {reason}")]
    Tls { name: String, reason: String },
}

/// The running guards, for reloads.
pub(crate) struct Handle {
    running: Vec<(Arc<Guard>, watch::Sender<Arc<Guard>>)>,
}

impl Handle {
    /// A reloaded config's guards: the audience, upstream, `ca_file` and `mcp` of a guard that
    /// keeps its name, listener and limits change at once; anything else waits for a restart.
    pub(crate) fn update(&self, next: &[Arc<Guard>]) {
        for (started, tx) in &self.running {
            match next.iter().find(|g| g.name == started.name) {
                Some(g) if g.bind == started.bind && g.limits == started.limits && g.mtls == started.mtls => {
                    if **g != **tx.borrow() {
                        tracing::info!(guard = %g.name, upstream = %g.upstream_url(), "guard updated");
                        let _ = tx.send(g.clone());
                    }
                }
                Some(_) => tracing::warn!(
                    guard = %started.name,
                    "reload: a change of a guard's listen, socket_path, tls, spiffe_id or limits takes effect only after a restart"
                ),
                None => {
                    tracing::warn!(guard = %started.name, "reload: removing a guard takes effect only after a restart")
                }
            }
        }
        for g in next.iter().filter(|g| !self.running.iter().any(|(s, _)| s.name == g.name)) {
            tracing::warn!(guard = %g.name, "reload: a new guard is served only after a restart");
        }
    }

    /// The Unix sockets to remove at shutdown.
    pub(crate) fn socket_paths(&self) -> impl Iterator<Item = &std::path::Path> {
        self.running.iter().filter_map(|(g, _)| match &g.bind {
            Bind::Unix(p) => Some(p.as_path()),
            Bind::Tcp(_) => None,
        })
    }
}

/// Bind every guard's listener and serve them until shutdown.
pub(crate) async fn start(
    guards: &[Arc<Guard>],
    pipeline: Arc<Pipeline>,
    issuer: Arc<dyn Issuer>,
    keys: Option<Arc<dyn KeySource>>,
    ca_changes: Option<watch::Receiver<u64>>,
    events: Events,
    shutdown: watch::Receiver<bool>,
) -> Result<Handle, GuardError> {
    let mut running = Vec::new();
    for g in guards {
        let (tx, rx) = watch::channel(g.clone());
        let verifier = auth::Verifier { issuer: issuer.clone(), keys: keys.clone() };
        let tls = match &g.mtls {
            None => None,
            Some(id) => {
                let tls_err = |reason: String| GuardError::Tls { name: g.name.clone(), reason };
                let (Some(ca), Some(changes)) = (&keys, &ca_changes) else {
                    return Err(tls_err("the guard's SVID needs the local CA (not SPIRE mode)".into()));
                };
                let clock = pipeline.clock.clone();
                let cert = crate::publish::tls::own_svid(
                    "guard",
                    ca.clone(),
                    id.clone(),
                    changes.clone(),
                    shutdown.clone(),
                    clock,
                )
                .map_err(|e| tls_err(e.to_string()))?;
                let client = Arc::new(mtls::SvidClientVerifier::new(issuer.clone(), pipeline.clone()));
                Some(mtls::acceptor(cert, client).map_err(tls_err)?)
            }
        };
        let shared = Arc::new(server::Shared::new(rx, g.limits, pipeline.clone(), verifier, events.clone()));
        match &g.bind {
            Bind::Unix(path) => {
                let listener = crate::net::listener::bind(path, 0o666)
                    .map_err(|source| GuardError::Socket { name: g.name.clone(), source })?;
                tokio::spawn(server::serve_unix(listener, shared, shutdown.clone()));
            }
            Bind::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| GuardError::Listen {
                    name: g.name.clone(),
                    addr: *addr,
                    source,
                })?;
                tokio::spawn(server::serve_tcp(listener, tls, shared, shutdown.clone()));
            }
        }
        let mtls = g.mtls.as_ref().map(ToString::to_string);
        tracing::info!(guard = %g.name, listen = %g.bind, upstream = %g.upstream_url(), mcp = g.mcp, mtls, "guard serving");
        running.push((g.clone(), tx));
    }
    Ok(Handle { running })
}
