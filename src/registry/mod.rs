//! Who may have which identity: the registration [`entry`] list and the reloadable [`Policy`]
//! snapshot every request reads once (entries, attestor settings, federated bundles, JWT
//! issuer), replaced whole in one step on reload, and its one writer, the [`compose`]r.

pub(crate) mod authz;
pub(crate) mod compose;
pub(crate) mod delegation;
pub(crate) mod deny;
pub(crate) mod entry;

pub(crate) use deny::{DenyList, DenyRule, DenyTarget};
pub use entry::Entry;
pub(crate) use entry::{MetaValue, Registry};

use crate::bundle::FederatedBundle;
use crate::spiffe_id::TrustDomain;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use tessera_attestors::{Attestor, Selector};

pub(crate) use compose::{ConfigPart, PolicyComposer, SpireSync};

/// What a reload can change, swapped as a whole: a request that read one snapshot attests with
/// its attestor settings and matches its entries, never a mix of two configs.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub registry: Registry,
    /// Attestation with this config's settings (env allowlist, config files, ...). Kept across
    /// reloads that do not change them, so its digest cache survives.
    pub attestor: Arc<Attestor>,
    pub jwt_issuer: Option<String>,
    /// Federated trust domains and their bundles, parsed once when loaded.
    pub federated: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
    /// Deny rules from the config and from runtime revocations.
    pub deny: Arc<DenyList>,
    /// The config's attestor settings before deny rules added the digests they need.
    pub attest_base: tessera_attestors::AttestConfig,
    /// Identity providers whose user tokens agents may exchange, their JWKS loaded.
    pub delegation_issuers: Arc<delegation::Issuers>,
    /// `[policy]`: the Cedar policies every decision point asks (None: not configured).
    pub authz: Option<Arc<authz::Authz>>,
    /// The declared RFC 9396 `authorization_details` types (empty without delegation).
    pub detail_types: Arc<delegation::DetailTypes>,
}

/// Why a workload whose selectors match entries gets none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotEntitled {
    /// No active entry matches.
    NoEntry,
    /// Entries match, but a deny rule takes them all away.
    Denied(Arc<DenyRule>),
}

impl Policy {
    /// The declared `authorization_details` types: per type, field name → field type (what
    /// Cedar's `context.details` holds).
    pub(crate) fn detail_types(&self) -> &delegation::DetailTypes {
        &self.detail_types
    }

    /// The entries a workload with these selectors gets: the active entries it matches, minus
    /// every identity a deny rule names; nothing at all when a rule names one of its selectors.
    pub(crate) fn entitled(&self, selectors: &BTreeSet<Selector>) -> Result<Vec<Arc<Entry>>, NotEntitled> {
        let matched = self.registry.matching(selectors);
        if matched.is_empty() {
            return Err(NotEntitled::NoEntry);
        }
        if let Some(rule) = self.deny.denies_workload(selectors) {
            return Err(NotEntitled::Denied(rule));
        }
        let mut denied = None;
        let kept: Vec<Arc<Entry>> = matched
            .into_iter()
            .filter(|e| match self.deny.denies_id(&e.spiffe_id) {
                Some(rule) => {
                    denied.get_or_insert_with(|| rule.clone());
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        match (kept.is_empty(), denied) {
            (true, Some(rule)) => Err(NotEntitled::Denied(rule)),
            (true, None) => Err(NotEntitled::NoEntry),
            (false, _) => Ok(kept),
        }
    }

    /// Why JWT-SVIDs of `id` must no longer validate here: a deny rule names it, or its entries
    /// are all retired.
    pub(crate) fn refuses_tokens_of(&self, id: &crate::spiffe_id::SpiffeId) -> Option<String> {
        if let Some(rule) = self.deny.denies_id(id) {
            return Some(format!("{id} is revoked (rule {})", rule.id));
        }
        let mut with_id = self.registry.entries().iter().filter(|e| &e.spiffe_id == id).peekable();
        if with_id.peek().is_some() && with_id.all(|e| e.retired) {
            return Some(format!("{id} belongs to a retired entry"));
        }
        None
    }

    /// The federated bundles `entries` ask for (`federates_with`).
    pub(crate) fn federated_for(&self, entries: &[Arc<Entry>]) -> BTreeMap<TrustDomain, Arc<FederatedBundle>> {
        entries
            .iter()
            .flat_map(|e| e.federates_with.iter())
            .filter_map(|td| self.federated.get(td).map(|b| (td.clone(), b.clone())))
            .collect()
    }
}
