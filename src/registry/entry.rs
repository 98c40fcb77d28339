//! Registration entries: a SPIFFE ID, the selectors a workload must all have, and SVID options.

use crate::spiffe_id::{SpiffeId, TrustDomain};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::Selector;

/// One registration entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub spiffe_id: SpiffeId,
    pub selectors: BTreeSet<Selector>,
    pub x509_svid_ttl: Duration,
    pub jwt_svid_ttl: Duration,
    pub dns_names: Vec<String>,
    pub hint: Option<String>,
    pub federates_with: Vec<TrustDomain>,
    /// The accountable human or team.
    pub owner: Option<String>,
    /// Operator-defined facts about the agent (model, capabilities, risk, ...).
    pub metadata: BTreeMap<String, MetaValue>,
    /// A retired entry matches nothing, stays listed, and its JWT-SVIDs no longer validate here.
    pub retired: bool,
    /// `[entries.delegation]`: this agent may act for users (token exchange).
    pub delegation: Option<Arc<super::delegation::EntryDelegation>>,
}

/// A metadata value: a string or a list of strings (nothing else reaches a token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    One(String),
    Many(Vec<String>),
}

impl Entry {
    /// An entry applies when every one of its selectors is among the workload's (never when retired).
    pub fn matches(&self, workload: &BTreeSet<Selector>) -> bool {
        // An entry without selectors would match every process: fail closed (config refuses it too).
        !self.retired && !self.selectors.is_empty() && self.selectors.is_subset(workload)
    }

    /// The `agent` claim of this entry's JWT-SVIDs: `{"owner": …, <metadata…>}`, or `None` when
    /// the entry has neither (tokens then stay plain JWT-SVIDs). Config refuses a metadata key
    /// named `owner`, so the two never collide.
    pub fn agent_claim(&self) -> Option<serde_json::Value> {
        if self.owner.is_none() && self.metadata.is_empty() {
            return None;
        }
        let mut claim = serde_json::Map::new();
        if let Some(owner) = &self.owner {
            claim.insert("owner".into(), owner.clone().into());
        }
        for (k, v) in &self.metadata {
            let v = match v {
                MetaValue::One(s) => serde_json::Value::from(s.clone()),
                MetaValue::Many(list) => serde_json::Value::from(list.clone()),
            };
            claim.insert(k.clone(), v);
        }
        Some(serde_json::Value::Object(claim))
    }
}

/// All entries, in config order (the first match is the workload's default identity).
///
/// Cheap to clone (the daemon holds it in its config and in every policy snapshot): both parts
/// are shared, not copied; a registry is never changed, a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    entries: Arc<[Arc<Entry>]>,
    /// Each entry listed once, under its least common selector: a workload can only match an
    /// entry whose rarest selector it has, so a lookup per workload selector finds every
    /// candidate without scanning thousands of entries.
    index: Arc<HashMap<Selector, Vec<usize>>>,
}

impl Registry {
    pub(crate) fn new(entries: Vec<Entry>) -> Self {
        let mut frequency: HashMap<&Selector, usize> = HashMap::new();
        for s in entries.iter().flat_map(|e| e.selectors.iter()) {
            *frequency.entry(s).or_default() += 1;
        }
        let mut index: HashMap<Selector, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(rarest) = e.selectors.iter().min_by_key(|s| frequency.get(s).copied().unwrap_or(0)) {
                index.entry(rarest.clone()).or_default().push(i);
            }
        }
        // Into an `Arc<[_]>` of exactly the entries: a `Vec` collected in place would keep the
        // whole `Vec<Entry>` allocation (~250 bytes per entry) for 8-byte pointers.
        index.shrink_to_fit();
        Self { entries: entries.into_iter().map(Arc::new).collect(), index: Arc::new(index) }
    }

    pub(crate) fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Entries whose selectors the workload all has, in config order. Entries with the same
    /// SPIFFE ID yield one SVID (the first), as a response names each identity once.
    pub(crate) fn matching(&self, workload: &BTreeSet<Selector>) -> Vec<&Arc<Entry>> {
        let mut candidates: Vec<usize> =
            workload.iter().filter_map(|s| self.index.get(s)).flat_map(|v| v.iter().copied()).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut seen = BTreeSet::new();
        candidates
            .into_iter()
            .map(|i| &self.entries[i])
            .filter(|e| e.matches(workload))
            .filter(|e| seen.insert(&e.spiffe_id))
            .collect()
    }
}

#[cfg(test)]
impl Entry {
    /// An entry for unit tests: `id` with `selectors`, default TTLs, nothing else.
    #[allow(clippy::unwrap_used, reason = "test values")]
    pub(crate) fn for_test(id: &str, selectors: &[&str]) -> Entry {
        Entry {
            spiffe_id: id.parse().unwrap(),
            selectors: selectors.iter().map(|s| s.parse().unwrap()).collect(),
            x509_svid_ttl: Duration::from_secs(600),
            jwt_svid_ttl: Duration::from_secs(300),
            dns_names: vec![],
            hint: None,
            federates_with: vec![],
            owner: None,
            metadata: Default::default(),
            retired: false,
            delegation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, sels: &[&str]) -> Entry {
        Entry::for_test(id, sels)
    }

    #[test]
    fn retired_entries_match_nothing_and_agent_claim_carries_owner_and_metadata() {
        let mut retired = entry("spiffe://t/old", &["unix:uid:1"]);
        retired.retired = true;
        let reg = Registry::new(vec![retired, entry("spiffe://t/new", &["unix:uid:1"])]);
        let wl: BTreeSet<Selector> = ["unix:uid:1"].iter().map(|s| s.parse().unwrap()).collect();
        let ids: Vec<String> = reg.matching(&wl).iter().map(|e| e.spiffe_id.to_string()).collect();
        assert_eq!(ids, ["spiffe://t/new"]);

        let mut e = entry("spiffe://t/a", &["unix:uid:1"]);
        assert_eq!(e.agent_claim(), None);
        e.owner = Some("team@x".into());
        e.metadata.insert("model".into(), MetaValue::One("m1".into()));
        e.metadata.insert("caps".into(), MetaValue::Many(vec!["a".into(), "b".into()]));
        assert_eq!(e.agent_claim(), Some(serde_json::json!({ "owner": "team@x", "model": "m1", "caps": ["a", "b"] })));
    }

    #[test]
    fn subset_match_in_config_order() {
        let reg = Registry::new(vec![
            entry("spiffe://t/a", &["unix:uid:1000", "unix:gid:1000"]),
            entry("spiffe://t/b", &["unix:uid:1000"]),
            entry("spiffe://t/c", &["unix:uid:0"]),
            entry("spiffe://t/b", &["unix:gid:1000"]),
        ]);
        let wl: BTreeSet<Selector> =
            ["unix:uid:1000", "unix:gid:1000", "unix:path:/bin/x"].iter().map(|s| s.parse().unwrap()).collect();
        let ids: Vec<String> = reg.matching(&wl).iter().map(|e| e.spiffe_id.to_string()).collect();
        assert_eq!(ids, ["spiffe://t/a", "spiffe://t/b"]);
    }

    #[test]
    fn index_finds_entries_among_many() {
        let mut entries: Vec<Entry> = (0..1000)
            .map(|i| entry(&format!("spiffe://t/filler{i}"), &["unix:uid:0", &format!("unix:gid:{}", i + 10)]))
            .collect();
        entries.insert(500, entry("spiffe://t/me", &["unix:uid:0", "unix:gid:5"]));
        entries.push(entry("spiffe://t/all-root", &["unix:uid:0"]));
        let reg = Registry::new(entries);
        let wl: BTreeSet<Selector> = ["unix:uid:0", "unix:gid:5"].iter().map(|s| s.parse().unwrap()).collect();
        let ids: Vec<String> = reg.matching(&wl).iter().map(|e| e.spiffe_id.to_string()).collect();
        assert_eq!(ids, ["spiffe://t/me", "spiffe://t/all-root"]);
    }
}
