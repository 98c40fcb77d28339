//! `tessera run`: wire the config, CA, attestors and audit trail to the Workload API socket, and
//! keep them live: CA rotation, reload on SIGHUP or config/bundle file change, clean shutdown.

use crate::audit::Audit;
use crate::ca::Ca;
use crate::config::Config;
use crate::pb::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::watch::{FileWatcher, Owner};
use crate::workload::endpoint;
use crate::workload::peer::PeerStream;
use crate::workload::service::{Policy, Shared, WorkloadService, require_security_header};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_attestors::Attestor;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error(transparent)]
    Bundle(#[from] crate::federation::BundleError),
    #[error("cannot open audit log {path}: {source}")]
    Audit { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Attestations in flight at once; more wait their turn (the kernel work is I/O and hashing).
const ATTEST_CONCURRENCY: usize = 16;
/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The reloadable part of a config, with federated bundles read from their files.
fn policy_of(config: &Config) -> Result<Policy, crate::federation::BundleError> {
    let mut federated = BTreeMap::new();
    for f in &config.federation {
        federated.insert(f.trust_domain.clone(), crate::federation::load(&f.bundle_path)?);
    }
    Ok(Policy { registry: config.registry.clone(), jwt_issuer: config.jwt_issuer.clone(), federated })
}

pub async fn run(config: Config) -> Result<(), DaemonError> {
    crate::install_crypto_provider();
    let ca = Arc::new(Ca::open(&config.data_dir, &config.trust_domain, config.ca_ttl, config.upstream.clone())?);
    let audit = Audit::open_with(&config.audit_log, config.audit.clone())
        .map_err(|source| DaemonError::Audit { path: config.audit_log.clone(), source })?;
    crate::storage::watch_free_space(vec![config.data_dir.clone(), config.audit_log.clone()]);
    let attestor = Arc::new(Attestor::new(config.attest.clone()));
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy_of(&config)?));
    let (ca_gen_tx, ca_gen_rx) = watch::channel(0u64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let files = FileWatcher::new();

    let listener = endpoint::bind(&config.socket_path, config.socket_mode)?;
    let shared = Arc::new(Shared {
        trust_domain: config.trust_domain.clone(),
        ca: ca.clone(),
        attestor: attestor.clone(),
        policy: policy_rx,
        ca_generation: ca_gen_rx,
        audit: audit.clone(),
        files: files.clone(),
        attest_slots: tokio::sync::Semaphore::new(ATTEST_CONCURRENCY),
        svid_cache: Default::default(),
        reattest_interval: config.reattest_interval,
        shutdown: shutdown_rx.clone(),
    });

    spawn_ca_rotation(ca.clone(), config.ca_ttl, ca_gen_tx, shutdown_rx.clone());
    spawn_reloader(&config, files, attestor, policy_tx, audit.clone(), shutdown_rx.clone())?;

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

    let incoming = UnixListenerStream::new(listener).filter_map(|conn| match conn.and_then(PeerStream::new) {
        Ok(stream) => Some(Ok::<_, std::io::Error>(stream)),
        Err(e) => {
            tracing::warn!(error = %e, "dropping connection: cannot read peer credentials");
            None
        }
    });
    let service = SpiffeWorkloadApiServer::with_interceptor(WorkloadService::new(shared), require_security_header);
    tracing::info!(
        socket = %config.socket_path.display(),
        trust_domain = %config.trust_domain,
        entries = config.registry.entries().len(),
        "serving the SPIFFE Workload API"
    );
    audit.record(
        "started",
        serde_json::json!({ "trust_domain": config.trust_domain.to_string(), "socket": config.socket_path }),
    );
    // grpc.health.v1 on the same socket, as spire-agent has (`spire-agent healthcheck` works against it).
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<SpiffeWorkloadApiServer<WorkloadService>>().await;
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // gRPC server reflection (grpcurl and friends), as SPIFFE_Workload_Endpoint.md recommends.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DaemonError::Reflection(e.to_string()))?;
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
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
    audit.close();
    tracing::info!("stopped; socket removed");
    result.map_err(DaemonError::from)
}

/// Check often enough that a successor is published well before it signs.
fn spawn_ca_rotation(ca: Arc<Ca>, ttl: Duration, generation: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
    let every = (ttl / 100).clamp(Duration::from_millis(200), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let ca = ca.clone();
            match tokio::task::spawn_blocking(move || ca.rotate_if_due(SystemTime::now())).await {
                Ok(Ok(true)) => generation.send_modify(|g| *g += 1),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "CA rotation failed; the current authority keeps signing"),
                Err(e) => tracing::error!(error = %e, "CA rotation task failed"),
            }
        }
    });
}

/// Reload on SIGHUP and whenever the config file or a federated bundle file changes. A config
/// that fails validation is refused and the one in force stays; the log says why.
fn spawn_reloader(
    config: &Config,
    files: Arc<FileWatcher>,
    attestor: Arc<Attestor>,
    policy: watch::Sender<Arc<Policy>>,
    audit: Audit,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let Some(path) = config.source.clone() else { return Ok(()) };
    let mut current = config.clone();
    let changed = Arc::new(Notify::new());
    let watch_paths = |c: &Config| -> Vec<std::path::PathBuf> {
        let mut p = vec![c.source.clone().unwrap_or_default()];
        p.extend(c.federation.iter().map(|f| f.bundle_path.clone()));
        p
    };
    let mut _files_sub = files.subscribe(Owner::Daemon, &watch_paths(&current), &changed);
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = changed.notified() => "file change",
                _ = shutdown.changed() => return,
            };
            // Let a burst of writes (editor save, config manager) settle into one reload.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A config that does not validate, or names a federated bundle that cannot be read,
            // is refused as a whole.
            let loaded = Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|c| policy_of(&c).map(|p| (c, p)).map_err(|e| e.to_string()));
            let (next, new_policy) = match loaded {
                Ok(loaded) => loaded,
                Err(reason) => {
                    tracing::error!("reload ({why}) refused, the previous config stays in force: {reason}");
                    audit.record("reload_refused", serde_json::json!({ "reason": reason }));
                    continue;
                }
            };
            for (what, differs) in [
                ("trust_domain", next.trust_domain != current.trust_domain),
                ("socket_path", next.socket_path != current.socket_path),
                ("data_dir", next.data_dir != current.data_dir),
                ("ca", next.ca_ttl != current.ca_ttl || next.upstream != current.upstream),
            ] {
                if differs {
                    tracing::warn!("reload: a change of {what} takes effect only after a restart");
                }
            }
            _files_sub = files.subscribe(Owner::Daemon, &watch_paths(&next), &changed);
            attestor.set_config(next.attest.clone());
            let entries = next.registry.entries().len();
            policy.send_replace(Arc::new(new_policy));
            tracing::info!(why, entries, "configuration reloaded");
            audit.record("reloaded", serde_json::json!({ "why": why, "entries": entries }));
            current = next;
        }
    });
    Ok(())
}
