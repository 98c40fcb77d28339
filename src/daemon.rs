//! `tessera run`: wire the config, CA, attestors and audit trail to the Workload API socket, and
//! keep them live (CA rotation) until SIGTERM/SIGINT.

use crate::audit::Audit;
use crate::ca::Ca;
use crate::config::Config;
use crate::pb::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::workload::endpoint;
use crate::workload::peer::PeerStream;
use crate::workload::service::{Policy, Shared, WorkloadService, require_security_header};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_attestors::Attestor;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("cannot open audit log {path}: {source}")]
    Audit {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// How often streams are re-attested when nothing else wakes them.
const REATTEST_INTERVAL: Duration = Duration::from_secs(30);
/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(config: Config) -> Result<(), DaemonError> {
    crate::install_crypto_provider();
    let ca = Arc::new(Ca::open(
        &config.data_dir,
        &config.trust_domain,
        config.ca_ttl,
    )?);
    let audit = Audit::open(&config.audit_log).map_err(|source| DaemonError::Audit {
        path: config.audit_log.clone(),
        source,
    })?;
    let attestor = Arc::new(Attestor::new(config.attest.clone()));
    let policy = Policy {
        registry: config.registry.clone(),
        jwt_issuer: config.jwt_issuer.clone(),
        federated: Default::default(),
    };
    let (_policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let (ca_gen_tx, ca_gen_rx) = watch::channel(0u64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let listener = endpoint::bind(&config.socket_path, config.socket_mode)?;
    let shared = Arc::new(Shared {
        trust_domain: config.trust_domain.clone(),
        ca: ca.clone(),
        attestor,
        policy: policy_rx,
        ca_generation: ca_gen_rx,
        audit: audit.clone(),
        reattest_interval: REATTEST_INTERVAL,
        shutdown: shutdown_rx.clone(),
    });

    // CA rotation: check often enough that a successor is published well before it signs.
    let rotation_every =
        (config.ca_ttl / 100).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let rot_ca = ca.clone();
    let mut rot_shutdown = shutdown_rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(rotation_every) => {}
                _ = rot_shutdown.changed() => return,
            }
            match rot_ca.rotate_if_due(SystemTime::now()) {
                Ok(true) => {
                    ca_gen_tx.send_modify(|g| *g += 1);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "CA rotation failed; the current authority keeps signing")
                }
            }
        }
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = shutdown_tx.send(true);
    });
    let mut on_shutdown = shutdown_rx.clone();
    let shutdown = async move {
        let _ = on_shutdown.wait_for(|s| *s).await;
    };
    // A client that never closes its connection must not keep the daemon alive after SIGTERM.
    let mut grace = shutdown_rx.clone();
    let grace_over = async move {
        let _ = grace.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };

    let incoming =
        UnixListenerStream::new(listener).filter_map(|conn| match conn.and_then(PeerStream::new) {
            Ok(stream) => Some(Ok::<_, std::io::Error>(stream)),
            Err(e) => {
                tracing::warn!(error = %e, "dropping connection: cannot read peer credentials");
                None
            }
        });
    let service = SpiffeWorkloadApiServer::with_interceptor(
        WorkloadService::new(shared),
        require_security_header,
    );
    tracing::info!(
        socket = %config.socket_path.display(),
        trust_domain = %config.trust_domain,
        entries = config.registry.entries().len(),
        "serving the SPIFFE Workload API"
    );
    audit.record("started", serde_json::json!({ "trust_domain": config.trust_domain.to_string(), "socket": config.socket_path }));
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let result = tokio::select! {
        r = server => r,
        _ = grace_over => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&config.socket_path);
    tracing::info!("stopped; socket removed");
    result.map_err(DaemonError::from)
}
