//! What the SPIRE-mode agent holds (entries, bundles, workload SVIDs) and how each event changes
//! it, as plain methods with no I/O: restoring the persisted state, applying a sync result,
//! dropping everything on a ban or eviction, and rendering what is published (the served SVIDs
//! and the entries and bundles for the policy composer). The agent loop (`spire::agent`) does the talking and the timers.

use super::convert::{self, EntryRefusal};
use super::issuer::{Served, key_of};
use super::keys::{from_unix, unix};
use super::pb::types::{self, permission_denied_details::Reason};
use super::persist::{Snapshot, StoredSvid, StoredSvids};
use super::svids::{self, Held, Want};
use crate::issuer::Bundles;
use crate::registry::{Entry, Registry, SpireSync};
use crate::secret::PrivateKey;
use crate::spiffe_id::TrustDomain;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// Something the server sent that was not taken; the previous state of it stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub what: String,
    pub reason: String,
}

impl Refusal {
    fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { what: what.into(), reason: reason.into() }
    }
}

/// Why a synced bundle was not taken (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BundleRefusal {
    /// The server answered for another trust domain.
    ForeignTrustDomain(String),
    /// The bundle itself is unusable (refused and audited).
    Invalid(String),
}

/// The entries of one sync, between deciding what to sign and taking the signed SVIDs.
pub(crate) struct PendingSync {
    /// The entries in force after this sync, by ID.
    next: HashMap<String, types::Entry>,
    /// SVIDs to (re)sign: new entries, changed ones, half-spent SVIDs.
    pub wants: Vec<Want>,
    /// Malformed entries (their previous version, if any, is kept).
    pub refusals: Vec<Refusal>,
    changed: bool,
}

/// What a sync changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SyncOutcome {
    /// Entries, bundles or SVIDs differ: publish and persist.
    pub changed: bool,
    /// SVIDs the server refused or sent unverifiable (the previous one, if any, is kept).
    pub refusals: Vec<Refusal>,
}

/// What to put in force together: the served SVIDs and bundles, and the entries and federated
/// bundles for the policy ([`crate::registry::PolicyComposer::spire_synced`]).
pub(crate) struct Published {
    pub served: Served,
    pub sync: SpireSync,
    /// Federated bundles left out.
    pub refusals: Vec<Refusal>,
}

/// What a denial of the server means for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Banned, or evicted without a way back: every identity goes, the loop stops.
    Stop(String),
    /// Attest again (forget the agent SVID and its connection).
    Reattest,
    /// Reconnect with the current agent SVID (it is not active yet on this connection).
    Reconnect,
    /// Not a denial about the agent: retry with backoff.
    Retry,
}

/// The verdict on a refusal of the server with `reason`, for an agent that can (or cannot) attest
/// again by itself.
pub(crate) fn verdict(reason: Option<Reason>, reattestable: bool) -> Verdict {
    match reason {
        Some(Reason::AgentBanned) => {
            Verdict::Stop("the SPIRE Server banned this agent (spire-server agent ban)".into())
        }
        Some(r @ (Reason::AgentNotAttested | Reason::AgentExpired)) if !reattestable => Verdict::Stop(format!(
            "the SPIRE Server no longer accepts this agent ({}): evicted or expired",
            r.as_str_name()
        )),
        Some(Reason::AgentNotAttested | Reason::AgentExpired | Reason::AgentMustReattest) => Verdict::Reattest,
        Some(Reason::AgentNotActive) => Verdict::Reconnect,
        _ => Verdict::Retry,
    }
}

/// The entries, bundles and SVIDs the agent holds.
pub(crate) struct State {
    td: TrustDomain,
    /// The configured trust bundle, used until the server gave one.
    bootstrap: Vec<Vec<u8>>,
    /// Last synced entries, by ID.
    pub entries: HashMap<String, types::Entry>,
    pub bundle: Option<types::Bundle>,
    pub federated: Vec<types::Bundle>,
    /// SVIDs by entry ID.
    pub held: HashMap<String, Held>,
}

impl State {
    pub(crate) fn new(td: TrustDomain, bootstrap: Vec<Vec<u8>>) -> Self {
        Self { td, bootstrap, entries: HashMap::new(), bundle: None, federated: Vec::new(), held: HashMap::new() }
    }

    /// The trust bundle's roots: the server's last bundle, else the bootstrap bundle.
    pub(crate) fn roots(&self) -> Vec<Vec<u8>> {
        match &self.bundle {
            Some(b) if !b.x509_authorities.is_empty() => b.x509_authorities.iter().map(|a| a.asn1.clone()).collect(),
            _ => self.bootstrap.clone(),
        }
    }

    /// The entries and bundles of the last good sync of an earlier run.
    pub(crate) fn restore(&mut self, s: Snapshot) {
        self.entries = s.entries.into_iter().map(|e| (e.id.clone(), e)).collect();
        self.bundle = s.bundle;
        self.federated = s.federated;
    }

    /// Persisted workload SVIDs: only those of a restored entry, naming its ID, verifying against
    /// the trust bundle and not expired at `now`.
    pub(crate) fn restore_svids(&mut self, stored: StoredSvids, now: SystemTime) {
        let roots = self.roots();
        for s in stored.svids {
            let Some(e) = self.entries.get(&s.entry_id) else { continue };
            let Ok(id) = convert::spiffe_id(e.spiffe_id.as_ref()) else { continue };
            if svids::verify_chain(&s.chain, &roots, &id).is_err() {
                continue;
            }
            let hint = Some(e.hint.clone()).filter(|h| !h.is_empty());
            let issued = from_unix(s.issued_at);
            if let Ok(h) =
                Held::build(s.entry_id.clone(), s.revision, id, hint, s.chain, PrivateKey::new(s.key_pkcs8), issued)
                && h.svid.not_after > now
            {
                self.held.insert(s.entry_id, h);
            }
        }
    }

    /// Take the synced bundles; true if they differ from the ones held (the server's CA may have
    /// rotated: reconnect). A refused bundle changes nothing.
    pub(crate) fn apply_bundles(
        &mut self,
        bundle: types::Bundle,
        federated: Vec<types::Bundle>,
    ) -> Result<bool, BundleRefusal> {
        if bundle.trust_domain != self.td.to_string() {
            return Err(BundleRefusal::ForeignTrustDomain(format!(
                "bundle of {:?}, not {}",
                bundle.trust_domain, self.td
            )));
        }
        convert::bundle(&bundle).map_err(BundleRefusal::Invalid)?;
        let changed = self.bundle.as_ref() != Some(&bundle) || self.federated != federated;
        self.bundle = Some(bundle);
        self.federated = federated;
        Ok(changed)
    }

    /// Sort the synced entries: which are in force next, which need an SVID signed, which are
    /// refused (their previous version stays), which are not for this node's attestors (left
    /// out). SVIDs of entries that are gone are dropped at once (never served again).
    pub(crate) fn begin_sync(&mut self, list: Vec<types::Entry>, bundle_changed: bool, now: SystemTime) -> PendingSync {
        let mut next: HashMap<String, types::Entry> = HashMap::with_capacity(list.len());
        let mut wants = Vec::new();
        let mut refusals = Vec::new();
        for e in list {
            match convert::entry(&e, &self.td) {
                Ok(entry) => {
                    let due = match self.held.get(&e.id) {
                        Some(h) => {
                            h.revision != e.revision_number
                                || now >= h.rotate_at()
                                || h.svid.spiffe_id != entry.spiffe_id
                        }
                        None => true,
                    };
                    if due {
                        wants.push(Want {
                            entry_id: e.id.clone(),
                            revision: e.revision_number,
                            spiffe_id: entry.spiffe_id,
                            hint: entry.hint,
                        });
                    }
                    next.insert(e.id.clone(), e);
                }
                Err(EntryRefusal::ForeignSelector(t)) => {
                    tracing::debug!(entry = %e.id, selector_type = %t, "entry not for this node's attestors");
                }
                Err(r @ EntryRefusal::Malformed(_)) => {
                    refusals.push(Refusal::new(format!("entry {}", e.id), r.to_string()));
                    if let Some(old) = self.entries.get(&e.id) {
                        next.insert(e.id.clone(), old.clone());
                    }
                }
            }
        }
        let mut changed = bundle_changed || next.len() != self.entries.len();
        changed |= next.iter().any(|(id, e)| self.entries.get(id) != Some(e));
        self.held.retain(|id, _| next.contains_key(id));
        PendingSync { next, wants, refusals, changed }
    }

    /// Take the signing results (one per want, in any order) and put the sync's entries in
    /// force. Only SVIDs of the entry's current revision that are not expired at `now` stay: an
    /// SVID for an earlier revision of a changed entry may name other selectors.
    pub(crate) fn finish_sync(
        &mut self,
        pending: PendingSync,
        signed: Vec<Result<Held, String>>,
        now: SystemTime,
    ) -> SyncOutcome {
        let PendingSync { next, mut changed, .. } = pending;
        let mut refusals = Vec::new();
        for r in signed {
            match r {
                Ok(h) => {
                    self.held.insert(h.entry_id.clone(), h);
                    changed = true;
                }
                Err(reason) => refusals.push(Refusal::new("X.509-SVID", reason)),
            }
        }
        self.held
            .retain(|id, h| next.get(id).is_some_and(|e| e.revision_number == h.revision) && h.svid.not_after > now);
        self.entries = next;
        SyncOutcome { changed, refusals }
    }

    /// Banned or evicted: no entry and no SVID any more (the bundles stay: they are public).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
    }

    /// The entries and bundles to persist.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            entries: self.entries.values().cloned().collect(),
            bundle: self.bundle.clone(),
            federated: self.federated.clone(),
        }
    }

    /// The workload SVIDs (with their keys) to persist.
    pub(crate) fn stored_svids(&self) -> StoredSvids {
        StoredSvids {
            svids: self
                .held
                .values()
                .map(|h| StoredSvid {
                    entry_id: h.entry_id.clone(),
                    revision: h.revision,
                    chain: h.chain.clone(),
                    key_pkcs8: h.svid.key_pkcs8().to_vec(),
                    issued_at: unix(h.issued_at),
                    expires_at: unix(h.svid.not_after),
                })
                .collect(),
        }
    }

    /// The current entries, SVIDs and bundles as they go in force together: only entries with an
    /// SVID are served, oldest first. (The composer adds the deny rules, delegation issuers and
    /// attestor settings.)
    pub(crate) fn published(&self) -> Published {
        let mut served_entries: Vec<(&types::Entry, Entry)> = self
            .entries
            .values()
            .filter(|e| self.held.contains_key(&e.id))
            .filter_map(|e| convert::entry(e, &self.td).ok().map(|c| (e, c)))
            .collect();
        // Oldest first: the first match is a workload's default identity, stably.
        served_entries.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        let mut served = Served::empty();
        if let Some(b) = self.bundle.as_ref().and_then(|b| convert::bundle(b).ok()) {
            served.bundles = Arc::new(Bundles {
                x509: b.x509,
                jwt: Arc::new(b.jwt),
                wit: Arc::new(crate::bundle::JwtBundle::new(vec![])),
            });
        }
        for (raw, entry) in &served_entries {
            if let Some(h) = self.held.get(&raw.id) {
                served.svids.insert(key_of(entry), h.clone());
                served.entry_ids.insert(key_of(entry), raw.id.clone());
            }
        }
        let mut refusals = Vec::new();
        let mut federated = BTreeMap::new();
        for b in &self.federated {
            let name = b.trust_domain.strip_prefix("spiffe://").unwrap_or(&b.trust_domain);
            match (name.parse::<TrustDomain>(), convert::bundle(b)) {
                (Ok(td), Ok(fb)) => {
                    federated.insert(td, Arc::new(fb));
                }
                (_, Err(e)) => refusals.push(Refusal::new(format!("federated bundle {name}"), e)),
                (Err(e), _) => refusals.push(Refusal::new("federated bundle", e.to_string())),
            }
        }
        let entries: Vec<Entry> = served_entries.into_iter().map(|(_, e)| e).collect();
        let sync = SpireSync { registry: Registry::new(entries), federated };
        Published { served, sync, refusals }
    }
}

#[cfg(test)]
mod tests;
