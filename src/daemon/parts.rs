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
