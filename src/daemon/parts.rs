//! What the daemon assembles from a config: the policy's config part, who signs, the upstream CA.

use crate::ca::Ca;
use crate::config::Config;
use crate::issuer::KeySource;
use crate::registry::ConfigPart;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a (re)loaded config puts into the policy: its entries, attestor settings, JWT issuer,
/// deny rules, delegation issuers (their JWKS read) and federation partners with their bundles
/// (the last fetched one, else the file's). The [`PolicyComposer`] does the rest.
pub(super) fn policy_part(
    config: &Config,
    fetched: &crate::federation::FetchedBundles,
) -> Result<ConfigPart, crate::bundle::federation::BundleError> {
    let mut federation = BTreeMap::new();
    for f in &config.federation {
        // A bundle fetched from the partner's endpoint wins over the (initial) file.
        federation.insert(f.trust_domain.clone(), crate::federation::current(fetched, f)?);
    }
    let issuers = config.delegation.as_ref().map(|d| d.issuers.as_slice()).unwrap_or_default();
    Ok(ConfigPart {
        registry: config.registry.clone(),
        attest: config.attest.clone(),
        jwt_issuer: config.jwt_issuer.clone(),
        deny: config.deny.clone(),
        delegation_issuers: Arc::new(crate::registry::delegation::Issuers::load(issuers)?),
        detail_types: config.delegation.as_ref().map(|d| d.detail_types.clone()).unwrap_or_default(),
        federation,
        // Every gateway_call line names the caller's executable digest: hashed (and cached by
        // inode) for every caller once the gateway is on, whatever the entries select on.
        exe_digests: config.gateway.is_some(),
        authz: config.policy.as_ref().map(|p| p.authz.clone()),
    })
}

/// Who signs: the node-local CA, or (SPIRE mode) the SPIRE Server, with the record of its good
/// syncs.
pub(super) enum Signer<'a> {
    Local(Arc<Ca>),
    Spire(&'a crate::config::spire::SpireConfig, Arc<crate::spire::last_sync::LastSync>),
}

impl Signer<'_> {
    /// The key view the services that publish keys use (none in SPIRE mode yet).
    pub(super) fn keys(&self) -> Option<Arc<dyn KeySource>> {
        match self {
            Signer::Local(ca) => Some(ca.clone()),
            Signer::Spire(..) => None,
        }
    }

    pub(super) fn last_sync(&self) -> Option<Arc<crate::spire::last_sync::LastSync>> {
        match self {
            Signer::Local(_) => None,
            Signer::Spire(_, last_sync) => Some(last_sync.clone()),
        }
    }
}

/// The CA's view of the config file's upstream section.
pub(super) fn upstream_of(config: &Config) -> Option<crate::ca::Upstream> {
    config.upstream.as_ref().map(|u| crate::ca::Upstream {
        cert: u.cert.clone(),
        key: u.key.clone(),
        bundle: u.bundle.clone(),
    })
}

/// The daemon's HTTP edges: the node gateway and the guards, for reloads and shutdown.
#[derive(Clone, Default)]
pub(super) struct Edges {
    gateway: Option<Arc<crate::gateway::Handle>>,
    guards: Option<Arc<crate::guard::Handle>>,
}

impl Edges {
    /// Bind and serve the gateway (`[gateway]`) and the guards (`[[guard]]`) of `config`.
    pub(super) async fn start(
        config: &Config,
        ctx: &crate::endpoint::workload_api::Context,
        keys: Option<Arc<dyn KeySource>>,
        ca_changes: Option<tokio::sync::watch::Receiver<u64>>,
        events: &crate::events::Events,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, super::DaemonError> {
        let mut edges = Self::default();
        if let Some(gw) = &config.gateway {
            let (pipeline, issuer) = (ctx.pipeline.clone(), ctx.issuer.clone());
            let handle =
                crate::gateway::start(config, gw, pipeline, issuer, keys.clone(), events.clone(), shutdown.clone())
                    .await?;
            edges.gateway = Some(Arc::new(handle));
        }
        if !config.guards.is_empty() {
            let (pipeline, issuer) = (ctx.pipeline.clone(), ctx.issuer.clone());
            let handle = crate::guard::start(
                &config.guards,
                pipeline,
                issuer,
                keys,
                ca_changes,
                events.clone(),
                shutdown.clone(),
            )
            .await?;
            edges.guards = Some(Arc::new(handle));
        }
        Ok(edges)
    }

    /// A reloaded config's routes, credentials and guard settings.
    pub(super) fn update(&self, next: &Config) {
        if let (Some(handle), Some(gw)) = (&self.gateway, &next.gateway) {
            handle.update(gw);
        }
        if let Some(handle) = &self.guards {
            handle.update(&next.guards);
        } else if !next.guards.is_empty() {
            tracing::warn!("reload: new guards are served only after a restart");
        }
    }

    pub(super) fn remove_sockets(&self) {
        if let Some(g) = &self.gateway {
            let _ = std::fs::remove_file(&g.socket_path);
        }
        if let Some(g) = &self.guards {
            g.socket_paths().for_each(|p| drop(std::fs::remove_file(p)));
        }
    }
}

/// `[discovery] interval`: scan /proc now and then every interval, off the async threads; the
/// result goes to the inventory (`unmanaged`) and the `tessera_unmanaged_agents` gauge.
pub(super) fn spawn_discovery(
    d: crate::discovery::Periodic,
    inventory: Arc<crate::inventory::Inventory>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let sigs = d.signatures.clone();
            let me = std::process::id().cast_signed();
            let scan =
                tokio::task::spawn_blocking(move || crate::discovery::scan(std::path::Path::new("/proc"), &sigs, me))
                    .await;
            if let Ok(scan) = scan {
                let n = inventory.set_unmanaged(scan.found);
                crate::telemetry::unmanaged::set(n);
                tracing::info!(unmanaged = n, processes = scan.processes, "discovery scan");
            }
            tokio::select! {
                () = tokio::time::sleep(d.every) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}
