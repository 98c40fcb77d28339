//! The policy composer: the one writer of the [`Policy`] channel. Its inputs are typed values
//! of this layer, each replaced whole by its writer: the loaded config's part ([`ConfigPart`],
//! from the reloader), a federated bundle fetched from a partner's endpoint, the runtime
//! revocations (`tessera revoke`), and a SPIRE sync ([`SpireSync`]). It keeps the current value
//! of each and the rules they share, and composes and publishes a new [`Policy`] whenever one
//! changes:
//! - attestor settings: the config's base (hashing bounds, env allowlist) with the digests and
//!   config files the entries in force ask for ([`attest_for_entries`]) and the deny rules name;
//! - the attestor (and its digest cache) is kept while those settings are equal;
//! - entries, JWT issuer and federated bundles come from the config, or once the SPIRE Server
//!   synced, from it; deny rules (config and runtime) and delegation issuers always from the
//!   config and the revocation store.
//!
//! Every method applies synchronously: the inputs sit behind a mutex and the policy is sent
//! (`send_replace`) before the lock is released and the method returns. A caller may rely on
//! the new policy being in force when the call returns (`tessera revoke` answers only then, and
//! open streams and new fetches see the revocation at once), and two writers at the same moment
//! cannot lose one another's input (a reload and a revoke each compose from the other's latest).

use super::delegation::{DetailTypes, Issuers};
use super::{DenyList, DenyRule, Entry, Policy, Registry};
use crate::bundle::FederatedBundle;
use crate::spiffe_id::TrustDomain;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tessera_attestors::{AttestConfig, Attestor, Kind};
use tokio::sync::watch;

/// What a loaded config puts into the policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigPart {
    pub registry: Registry,
    /// The config's attestor settings; what entries and deny rules need is worked out here.
    pub attest: AttestConfig,
    pub jwt_issuer: Option<String>,
    /// `[[deny]]` rules.
    pub deny: Vec<Arc<DenyRule>>,
    /// Identity providers whose user tokens agents may exchange, their JWKS loaded.
    pub delegation_issuers: Arc<Issuers>,
    /// The declared `authorization_details` types.
    pub detail_types: Arc<DetailTypes>,
    /// The federation partners, each with the bundle it had when the config was loaded (its
    /// file, or the last one fetched from its endpoint); `None`: none yet. A bundle fetched
    /// later ([`PolicyComposer::bundle_updated`]) wins.
    pub federation: BTreeMap<TrustDomain, Option<Arc<FederatedBundle>>>,
    /// Every caller's executable is hashed, whatever the entries select on (the gateway's audit
    /// lines name each caller's executable digest).
    pub exe_digests: bool,
    /// `[policy]`: the Cedar policy set (None: no policies, today's fixed rules alone).
    pub authz: Option<Arc<super::authz::Authz>>,
}

/// What a sync with the SPIRE Server puts into the policy: its entries (those served) and its
/// federated bundles, in place of the config's. Deny rules and delegation issuers stay.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpireSync {
    pub registry: Registry,
    pub federated: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
}

/// The current value of every input, and the shared rules built from them.
struct Inputs {
    config: ConfigPart,
    /// Bundles fetched from partners' endpoints since start, by trust domain.
    fetched: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
    runtime: Vec<Arc<DenyRule>>,
    /// Set once the SPIRE Server synced (SPIRE mode).
    spire: Option<SpireSync>,
    /// The deny rules in force (config and runtime), rebuilt only when either changes.
    deny: Arc<DenyList>,
    /// The attestor in force: kept while its settings do not change.
    attestor: Option<Arc<Attestor>>,
}

impl Inputs {
    fn rebuild_deny(&mut self) {
        self.deny = Arc::new(DenyList { config: self.config.deny.clone(), runtime: self.runtime.clone() });
    }

    fn compose(&mut self) -> Policy {
        let (registry, jwt_issuer, federated) = match &self.spire {
            Some(s) => (s.registry.clone(), None, s.federated.clone()),
            None => {
                let federated = self
                    .config
                    .federation
                    .iter()
                    .filter_map(|(td, loaded)| {
                        self.fetched.get(td).or(loaded.as_ref()).map(|b| (td.clone(), b.clone()))
                    })
                    .collect();
                (self.config.registry.clone(), self.config.jwt_issuer.clone(), federated)
            }
        };
        let mut attest_base = attest_for_entries(&self.config.attest, registry.entries().iter().map(|e| &**e));
        attest_base.want_exe_digest |= self.config.exe_digests;
        let attest = self.deny.attest_config(&attest_base);
        let attestor = match &self.attestor {
            Some(a) if *a.config() == attest => a.clone(),
            _ => Arc::new(Attestor::new(attest)),
        };
        self.attestor = Some(attestor.clone());
        Policy {
            registry,
            attestor,
            jwt_issuer,
            federated,
            deny: self.deny.clone(),
            attest_base,
            delegation_issuers: self.config.delegation_issuers.clone(),
            authz: self.config.authz.clone(),
            detail_types: self.config.detail_types.clone(),
        }
    }
}

/// The attestor settings for `entries`: `base` with digests and config files computed only
/// where an entry's selector asks for them.
pub(crate) fn attest_for_entries<'a>(
    base: &AttestConfig,
    entries: impl Iterator<Item = &'a Entry> + Clone,
) -> AttestConfig {
    let sels = || entries.clone().flat_map(|e| e.selectors.iter());
    let wants = |kind: Kind| sels().any(|s| s.kind() == kind && s.value().starts_with("sha256:"));
    let mut paths: Vec<_> = sels().filter_map(tessera_attestors::config_path_of).collect();
    paths.sort();
    paths.dedup();
    AttestConfig {
        want_exe_digest: wants(Kind::Unix),
        want_script_digest: wants(Kind::Script),
        config_paths: paths,
        ..base.clone()
    }
}

struct Inner {
    inputs: Mutex<Inputs>,
    tx: watch::Sender<Arc<Policy>>,
}

/// The handle every writer of the policy holds (cheap to clone): one method per input.
#[derive(Clone)]
pub(crate) struct PolicyComposer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyComposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyComposer").finish_non_exhaustive()
    }
}

impl PolicyComposer {
    /// Compose the first policy from the config and the stored runtime revocations.
    pub(crate) fn new(config: ConfigPart, runtime: Vec<Arc<DenyRule>>) -> Self {
        let mut inputs =
            Inputs { config, fetched: BTreeMap::new(), runtime, spire: None, deny: Arc::default(), attestor: None };
        inputs.rebuild_deny();
        let (tx, _) = watch::channel(Arc::new(inputs.compose()));
        Self { inner: Arc::new(Inner { inputs: Mutex::new(inputs), tx }) }
    }

    /// A receiver of every policy published from now on (it has seen the current one).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.inner.tx.subscribe()
    }

    /// The policy in force.
    pub(crate) fn current(&self) -> Arc<Policy> {
        self.inner.tx.borrow().clone()
    }

    /// A reloaded config; runtime revocations, fetched bundles of the partners it still names
    /// and a SPIRE sync stay. A partner the config drops loses its fetched bundle: if it is added
    /// again later, its (new) configured bundle is the trust anchor, not a stale fetched one.
    pub(crate) fn config_loaded(&self, config: ConfigPart) {
        self.update(|i| {
            i.fetched.retain(|td, _| config.federation.contains_key(td));
            i.config = config;
            i.rebuild_deny();
        });
    }

    /// A bundle fetched from a federation partner's endpoint; it wins over the config's. One for
    /// a partner the config does not name is ignored.
    pub(crate) fn bundle_updated(&self, trust_domain: TrustDomain, bundle: Arc<FederatedBundle>) {
        self.update(|i| {
            if i.config.federation.contains_key(&trust_domain) {
                i.fetched.insert(trust_domain, bundle);
            }
        });
    }

    /// The runtime revocations now in force (the whole set).
    pub(crate) fn revocations_changed(&self, runtime: Vec<Arc<DenyRule>>) {
        self.update(|i| {
            i.runtime = runtime;
            i.rebuild_deny();
        });
    }

    /// What the SPIRE Server sent: its entries and federated bundles replace the config's.
    pub(crate) fn spire_synced(&self, sync: SpireSync) {
        self.update(|i| i.spire = Some(sync));
    }

    fn lock(&self) -> MutexGuard<'_, Inputs> {
        self.inner.inputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change one input, then compose and publish, all under the lock.
    fn update(&self, change: impl FnOnce(&mut Inputs)) {
        let mut inputs = self.lock();
        change(&mut inputs);
        let policy = inputs.compose();
        self.inner.tx.send_replace(Arc::new(policy));
    }
}

#[cfg(test)]
mod tests;
