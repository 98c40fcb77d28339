//! `tessera run`: wire the config, CA, attestors and audit trail to the Workload API socket, and
//! keep them live: CA rotation, reload on SIGHUP or config/bundle file change, clean shutdown.

use crate::ca::Ca;
use crate::caller::Pipeline;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::endpoint::workload_api::{Context, WorkloadService, require_security_header};
use crate::events::audit::Audit;
use crate::events::{Event, Events};
use crate::issuer::KeySource;
use crate::issuer::local::LocalIssuer;
use crate::limits::FairSlots;
use crate::net::accept::ConnectionLimits;
use crate::net::listener as endpoint;
use crate::pb::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use crate::registry::PolicyComposer;
use crate::watch::{FileWatcher, Owner};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::ReceiverStream;

mod parts;
mod preflight;
#[cfg(test)]
mod tests;

use parts::{Signer, policy_part, upstream_of};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DaemonError {
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Bundle(#[from] crate::bundle::federation::BundleError),
    #[error("cannot open audit log {path}: {source}")]
    Audit { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Revocations(#[from] crate::admin::revoke::StoreError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Spire(#[from] crate::spire::error::SpireError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
}

/// Attestations in flight at once; more wait their turn (the kernel work is I/O and hashing).
const ATTEST_CONCURRENCY: usize = 16;
/// Attestations of one uid in flight at once: one uid's slow callers queue behind each other.
const ATTEST_CONCURRENCY_PER_UID: usize = 4;
/// HTTP/2 streams one connection may have open. An SDK needs a handful (X.509, bundles, JWT
/// bundles); without a bound, one connection's HEADERS-only streams grew the daemon by 440 MB.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// A unary request whose body never completes (or a stream whose first message never does) is
/// abandoned after this. Generous: a first attestation may hash a large binary.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) use preflight::ensure_not_running;

/// [`run`], calling `once_serving` on a blocking thread once the Workload API serves and the
/// one-time warm-up is done (the binary drops its start-up code from memory there).
pub(crate) async fn run_then(config: Config, once_serving: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    // Signal handlers before the socket exists: a SIGTERM as soon as clients can connect must
    // shut down cleanly (remove the socket, flush the audit), not kill with the default action.
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        }
    };
    run_with(config, Arc::new(SystemClock), once_serving, stop).await
}

/// The daemon on `clock` (every decision's time: CA rotation, issuance and validation, streams,
/// sessions, token exchange and approvals, telemetry, the inventory) until `stop` says why it
/// should stop (a signal; in tests, the test).
pub(crate) async fn run_with(
    mut config: Config,
    clock: Arc<dyn Clock>,
    once_serving: impl FnOnce() + Send + 'static,
    stop: impl std::future::Future<Output = &'static str> + Send + 'static,
) -> Result<(), DaemonError> {
    // `tessera check` reports them; the daemon would only carry them (one per entry without an
    // owner: ~150 KB for 1,000 entries) for its whole life.
    config.warnings = Vec::new();
    ensure_not_running(&config)?;
    crate::install_crypto_provider();
    // Who signs: the node-local CA, or (SPIRE mode) the SPIRE Server, whose entries then replace
    // the config's and are not reloaded from it. The CA is opened first: it locks `data_dir`, so
    // that a second daemon started at the same moment never appends to the same audit chain.
    let signer = match &config.spire {
        None => Signer::Local(Arc::new(Ca::open(
            &config.data_dir,
            &config.trust_domain,
            config.ca_ttl,
            upstream_of(&config),
            clock.now(),
        )?)),
        // SPIRE mode: the sync loop records its good syncs here, telemetry reports their age.
        Some(spire) => Signer::Spire(spire, Arc::new(crate::spire::last_sync::LastSync::new(clock.now()))),
    };
    let audit = Audit::open_with(&config.audit_log, config.audit.clone())
        .map_err(|source| DaemonError::Audit { path: config.audit_log.clone(), source })?;
    // A full disk would make the CA's atomic writes fail at rotation: warn well before.
    crate::storage::watch_free_space(vec![config.data_dir.clone(), config.audit_log.clone()]);
    // Subscribers of the event spine: the audit log (add metrics, an inventory, ... here).
    let mut events = Events::new();
    events.subscribe(Arc::new(audit.clone()));
    let fetched = crate::federation::initial(&config);
    let inventory = crate::inventory::Inventory::new(clock.clone());
    events.subscribe(inventory.clone());
    let revocations = Arc::new(crate::admin::revoke::Revocations::open(&config.data_dir)?);
    // The one writer of the policy: reload, revocations, federated bundles and SPIRE syncs
    // each hand it their input.
    let composer = PolicyComposer::new(policy_part(&config, &fetched)?, revocations.rules());
    let policy_rx = composer.subscribe();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if let Some(d) = config.discovery.clone() {
        parts::spawn_discovery(d, inventory.clone(), shutdown_rx.clone());
    }
    let files = FileWatcher::with_linger(crate::watch::MAX_DIRS_PER_UID, crate::watch::MAX_DIRS, crate::watch::LINGER);
    // Telemetry subscribes before any copy of the event spine is handed out.
    let telemetry = crate::telemetry::Telemetry::start(
        signer.keys(),
        signer.last_sync(),
        policy_rx.clone(),
        &mut events,
        shutdown_rx.clone(),
        clock.clone(),
    );
    let (issuer, local_ca): (Arc<dyn crate::issuer::Issuer>, _) = match signer {
        Signer::Local(ca) => {
            let (ca_gen_tx, ca_gen_rx) = watch::channel(0u64);
            (Arc::new(LocalIssuer::new(ca.clone(), ca_gen_rx)), Some((ca, ca_gen_tx)))
        }
        Signer::Spire(spire, last_sync) => {
            tracing::info!(server = %spire.server_address, "SPIRE mode: entries and SVIDs come from the SPIRE Server");
            let issuer = crate::spire::agent::start(
                &config,
                spire,
                composer.clone(),
                events.clone(),
                last_sync,
                shutdown_rx.clone(),
            )?;
            (issuer, None)
        }
    };
    let connection_limits = ConnectionLimits::default().fitted_to_fd_limit();
    let stream_wake = crate::endpoint::stream::wakeups(policy_rx.clone(), issuer.changes(), shutdown_rx.clone());
    let ctx = Arc::new(Context {
        pipeline: Arc::new(Pipeline::new(
            policy_rx.clone(),
            FairSlots::new(ATTEST_CONCURRENCY, ATTEST_CONCURRENCY_PER_UID),
            events.clone(),
            clock.clone(),
        )),
        issuer,
        files: files.clone(),
        reattest_interval: config.reattest_interval,
        shutdown: shutdown_rx.clone(),
        stream_wake,
    });

    // The admin socket: commands register their routes here.
    let mut admin_routes = crate::net::http::Routes::new();
    telemetry.serve(&config, &mut admin_routes, shutdown_rx.clone()).await?;
    crate::inventory::routes(&mut admin_routes, inventory.clone(), policy_rx.clone());
    crate::admin::revoke::routes(&mut admin_routes, revocations.clone(), composer.clone(), inventory, events.clone());
    if let Some((ca, ca_gen_tx)) = &local_ca {
        let keys: Arc<dyn KeySource> = ca.clone();
        crate::delegation::start(&config, &ctx.pipeline, &keys, &events, &mut admin_routes, shutdown_rx.clone())?;
        // The delegated-token issuer publishes its own keys when delegation is on.
        let delegation_keys = config.delegation.is_some().then(|| {
            let ca = ca.clone();
            let keys: crate::publish::oidc::DelegationKeys = Arc::new(move || {
                ca.authorities().delegation.iter().map(|k| crate::delegation::trust::delegation_jwk(k)).collect()
            });
            keys
        });
        crate::publish::spawn(
            &config,
            keys,
            ca_gen_tx.subscribe(),
            delegation_keys,
            &mut admin_routes,
            shutdown_rx.clone(),
            clock.clone(),
        )
        .await?;
    } else if config.delegation.is_some() || config.oidc.is_some() || config.bundle_endpoint.is_some() {
        tracing::warn!("SPIRE mode: delegation, [oidc] and [bundle_endpoint] need the local CA and are not served");
    }
    // The node gateway (calls out of the node) and the guards (calls into protected services).
    let keys = local_ca.as_ref().map(|(ca, _)| -> Arc<dyn KeySource> { ca.clone() });
    let ca_changes = local_ca.as_ref().map(|(_, tx)| tx.subscribe());
    let edges = parts::Edges::start(&config, &ctx, keys, ca_changes, &events, &shutdown_rx).await?;
    let admin_listener = crate::admin::bind(&config.admin_socket_path, config.admin_socket_group)?;
    let admin = crate::admin::AdminHandler {
        authorized: crate::admin::Authorized {
            daemon_uid: nix::unistd::geteuid().as_raw(),
            group: config.admin_socket_group,
        },
        routes: admin_routes,
        events: events.clone(),
    };
    tokio::spawn(crate::net::http::serve_unix(
        admin_listener,
        Arc::new(admin),
        crate::net::http::Limits::default(),
        shutdown_rx.clone(),
    ));
    if let Some((ca, ca_gen_tx)) = local_ca {
        spawn_ca_rotation(ca, config.ca_ttl, ca_gen_tx, events.clone(), clock, shutdown_rx.clone());
        crate::federation::spawn(&config, fetched.clone(), composer.clone(), events.clone(), shutdown_rx.clone());
        spawn_reloader(&config, files, composer, fetched, edges.clone(), events.clone(), shutdown_rx.clone())?;
    }

    tokio::spawn(async move {
        let why = stop.await;
        tracing::info!("{why}: shutting down");
        crate::telemetry::systemd::stopping();
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

    // The Workload API socket last: once it exists, every other socket does too.
    let listener = endpoint::bind(&config.socket_path, config.socket_mode)?;
    let incoming = ReceiverStream::new(crate::net::accept::spawn(listener, connection_limits, shutdown_rx.clone()));
    // One-time costs paid now, off the runtime, not by the first workload that connects.
    let attestor = ctx.pipeline.policy().attestor.clone();
    tokio::task::spawn_blocking(move || {
        attestor.prewarm();
        crate::svid::x509::prewarm();
        once_serving();
    });
    let api = WorkloadService::new(ctx);
    // The streaming RPCs with our own response body (see `endpoint::streaming`), the others
    // through the generated server; the same interceptor in front of both.
    let service = crate::endpoint::streaming::WorkloadRoutes::new(
        api.clone(),
        require_security_header,
        SpiffeWorkloadApiServer::with_interceptor(api, require_security_header),
    );
    tracing::info!(
        socket = %config.socket_path.display(),
        admin_socket = %config.admin_socket_path.display(),
        trust_domain = %config.trust_domain,
        entries = config.registry.entries().len(),
        "serving the SPIFFE Workload API"
    );
    events.emit(Event::Started { trust_domain: config.trust_domain.clone(), socket: config.socket_path.clone() });
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
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_local_error_reset_streams(Some(256))
        .http2_max_header_list_size(16 * 1024)
        // Dead peers are found and their connections (and per-uid slots) freed.
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .timeout(REQUEST_TIMEOUT)
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
    let _ = std::fs::remove_file(&config.admin_socket_path);
    crate::delegation::remove_sockets(&config);
    edges.remove_sockets();
    audit.close();
    tracing::info!("stopped; socket removed");
    result.map_err(DaemonError::from)
}

/// Check often enough that a successor is published well before it signs.
fn spawn_ca_rotation(
    ca: Arc<Ca>,
    ttl: Duration,
    generation: watch::Sender<u64>,
    events: Events,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (ttl / 100).clamp(Duration::from_millis(200), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let rotating = ca.clone();
            let now = clock.now();
            match tokio::task::spawn_blocking(move || rotating.rotate_if_due(now)).await {
                Ok(Ok(true)) => {
                    generation.send_modify(|g| *g += 1);
                    events.emit(Event::CaRotated);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "CA rotation failed; the current authority keeps signing"),
                Err(e) => tracing::error!(error = %e, "CA rotation task failed"),
            }
        }
    });
}

fn token_socket(c: &Config) -> Option<&std::path::Path> {
    c.delegation.as_ref().map(|d| d.token_socket_path.as_path())
}

/// Reload on SIGHUP and whenever the config file or a federated bundle file changes. A config
/// that fails validation is refused and the one in force stays; the log says why.
fn spawn_reloader(
    config: &Config,
    files: Arc<FileWatcher>,
    policy: PolicyComposer,
    fetched: crate::federation::FetchedBundles,
    edges: parts::Edges,
    events: Events,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let Some(path) = config.source.clone() else { return Ok(()) };
    let mut current = config.clone();
    let changed = Arc::new(Notify::new());
    let watch_paths = |c: &Config| -> Vec<std::path::PathBuf> {
        let mut p = vec![c.source.clone().unwrap_or_default()];
        p.extend(c.federation.iter().filter_map(|f| f.bundle_path.clone()));
        p.extend(c.delegation.iter().flat_map(|d| d.issuers.iter().map(|i| i.jwks_path.clone())));
        p.extend(c.policy.iter().flat_map(|pc| pc.files.watch_paths()));
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
            // systemd sees RELOADING=1 now and READY=1 when this iteration ends, either way.
            let _reloading = crate::telemetry::systemd::Reloading::begin();
            // Let a burst of writes (editor save, config manager) settle into one reload.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A config that does not validate, or names a federated bundle that cannot be read,
            // is refused as a whole.
            // Off the runtime: thousands of Cedar policies take a second to validate.
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || Config::load(&p).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(format!("the config loader failed: {e}")));
            // The composer keeps the runtime revocations and fetched bundles: a revoke at the
            // same moment is in the new policy, never lost by it.
            let published = loaded.and_then(|c| {
                let part = policy_part(&c, &fetched).map_err(|e| e.to_string())?;
                policy.config_loaded(part);
                Ok(c)
            });
            let next = match published {
                Ok(loaded) => loaded,
                Err(reason) => {
                    tracing::error!("reload ({why}) refused, the previous config stays in force: {reason}");
                    events.emit(Event::ReloadRefused { reason });
                    continue;
                }
            };
            for (what, differs) in [
                ("trust_domain", next.trust_domain != current.trust_domain),
                ("socket_path", next.socket_path != current.socket_path),
                ("data_dir", next.data_dir != current.data_dir),
                ("token socket (delegation on/off, token_socket_path)", token_socket(&next) != token_socket(&current)),
                ("[approvals]", next.approvals != current.approvals),
                ("ca", next.ca_ttl != current.ca_ttl || next.upstream != current.upstream),
                ("telemetry", next.telemetry != current.telemetry),
                (
                    "gateway listeners or limits",
                    next.gateway.as_ref().map(|g| (&g.socket_path, g.listen, g.limits))
                        != current.gateway.as_ref().map(|g| (&g.socket_path, g.listen, g.limits)),
                ),
            ] {
                if differs {
                    tracing::warn!("reload: a change of {what} takes effect only after a restart");
                }
            }
            edges.update(&next);
            _files_sub = files.subscribe(Owner::Daemon, &watch_paths(&next), &changed);
            let entries = next.registry.entries().len();
            tracing::info!(why, entries, "configuration reloaded");
            events.emit(Event::Reloaded { why: why.to_owned(), entries });
            current = Config { warnings: Vec::new(), ..next };
        }
    });
    Ok(())
}
