//! The node gateway: agents call model APIs and other HTTPS services through it and hold no
//! secret. It attests the caller (a Unix socket's kernel credentials, or a loopback TCP
//! connection attributed by socket diagnostics), finds the route, drops whatever credential the
//! agent sent, injects the route's credential (or checks the agent's delegated token), forwards
//! over TLS, streams the answer back and writes one audit line per call.

pub(crate) mod body;
mod conn_io;
pub(crate) mod credentials;
mod delegated;
mod route;
pub(crate) mod server;
pub(crate) mod tls;

use crate::caller::Pipeline;
use crate::config::Config;
use crate::config::gateway::{Credential, Gateway as GatewayConfig, Route};
use crate::events::Events;
use crate::issuer::{Issuer, KeySource};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error(transparent)]
    Socket(#[from] crate::net::listener::EndpointError),
    #[error("cannot listen on {addr} ([gateway] listen): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// The routes and credentials in force (replaced whole on reload).
pub(crate) struct Table {
    pub routes: Vec<Arc<Route>>,
    pub credentials: Vec<Arc<Credential>>,
}

impl Table {
    fn of(gw: &GatewayConfig) -> Arc<Self> {
        Arc::new(Self { routes: gw.routes.clone(), credentials: gw.credentials.clone() })
    }
}

/// The running gateway, for reloads.
pub(crate) struct Handle {
    routes: watch::Sender<Arc<Table>>,
    broker: Arc<credentials::Broker>,
    pub socket_path: std::path::PathBuf,
}

impl Handle {
    /// A reloaded config's routes and credentials (listeners and limits need a restart).
    pub(crate) fn update(&self, gw: &GatewayConfig) {
        self.broker.update(&gw.credentials);
        let _ = self.routes.send(Table::of(gw));
    }
}

/// Bind the gateway's listeners and serve them until shutdown.
pub(crate) async fn start(
    config: &Config,
    gw: &GatewayConfig,
    pipeline: Arc<Pipeline>,
    issuer: Arc<dyn Issuer>,
    keys: Option<Arc<dyn KeySource>>,
    events: Events,
    shutdown: watch::Receiver<bool>,
) -> Result<Handle, GatewayError> {
    let broker =
        Arc::new(credentials::Broker::new(&gw.credentials, gw.limits.connect_timeout, issuer, pipeline.clock.clone()));
    let (routes_tx, routes_rx) = watch::channel(Table::of(gw));
    let mut own: Vec<std::net::SocketAddr> = gw.listen.into_iter().collect();
    own.extend(config.oidc.as_ref().map(|o| o.listen));
    own.extend(config.bundle_endpoint.as_ref().map(|b| b.listen));
    own.extend(config.telemetry.listen);
    let shared = Arc::new(server::Shared::new(routes_rx, pipeline, broker.clone(), keys, events, gw.limits, own));
    let unix = crate::net::listener::bind(&gw.socket_path, 0o777)?;
    tokio::spawn(server::serve_unix(unix, shared.clone(), shutdown.clone()));
    if let Some(addr) = gw.listen {
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|source| GatewayError::Listen { addr, source })?;
        tokio::spawn(server::serve_tcp(tcp, shared, shutdown));
    }
    tracing::info!(socket = %gw.socket_path.display(), listen = ?gw.listen, routes = gw.routes.len(), "gateway serving");
    Ok(Handle { routes: routes_tx, broker, socket_path: gw.socket_path.clone() })
}
