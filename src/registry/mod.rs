//! Who may have which identity: the registration [`entry`] list and the reloadable [`Policy`]
//! snapshot every request reads once (entries, attestor settings, federated bundles, JWT
//! issuer), replaced whole in one step on reload.

pub mod entry;

pub use entry::{Entry, Registry};

use crate::bundle::FederatedBundle;
use crate::spiffe_id::TrustDomain;
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_attestors::Attestor;

/// What a reload can change, swapped as a whole: a request that read one snapshot attests with
/// its attestor settings and matches its entries, never a mix of two configs.
#[derive(Debug)]
pub struct Policy {
    pub registry: Registry,
    /// Attestation with this config's settings (env allowlist, config files, ...). Kept across
    /// reloads that do not change them, so its digest cache survives.
    pub attestor: Arc<Attestor>,
    pub jwt_issuer: Option<String>,
    /// Federated trust domains and their bundles, parsed once when loaded.
    pub federated: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
    /// Identity providers whose user tokens agents may exchange, their JWKS loaded.
    pub delegation_issuers: Arc<crate::delegation::trust::Issuers>,
}

impl Policy {
    /// The federated bundles `entries` ask for (`federates_with`).
    pub fn federated_for(&self, entries: &[Arc<Entry>]) -> BTreeMap<TrustDomain, Arc<FederatedBundle>> {
        entries
            .iter()
            .flat_map(|e| e.federates_with.iter())
            .filter_map(|td| self.federated.get(td).map(|b| (td.clone(), b.clone())))
            .collect()
    }
}
