//! Registration entries: a SPIFFE ID, the selectors a workload must all have, and SVID options.

use crate::spiffe_id::{SpiffeId, TrustDomain};
use std::collections::BTreeSet;
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
}

impl Entry {
    /// An entry applies when every one of its selectors is among the workload's.
    pub fn matches(&self, workload: &BTreeSet<Selector>) -> bool {
        // An entry without selectors would match every process: fail closed (config refuses it too).
        !self.selectors.is_empty() && self.selectors.is_subset(workload)
    }
}

/// All entries, in config order (the first match is the workload's default identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    entries: Vec<Arc<Entry>>,
}

impl Registry {
    pub fn new(entries: Vec<Entry>) -> Self {
        Self { entries: entries.into_iter().map(Arc::new).collect() }
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Entries whose selectors the workload all has, in config order. Entries with the same
    /// SPIFFE ID yield one SVID (the first), as a response names each identity once.
    pub fn matching(&self, workload: &BTreeSet<Selector>) -> Vec<&Arc<Entry>> {
        let mut seen = BTreeSet::new();
        self.entries.iter().filter(|e| e.matches(workload)).filter(|e| seen.insert(&e.spiffe_id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, sels: &[&str]) -> Entry {
        Entry {
            spiffe_id: id.parse().unwrap(),
            selectors: sels.iter().map(|s| s.parse().unwrap()).collect(),
            x509_svid_ttl: Duration::from_secs(600),
            jwt_svid_ttl: Duration::from_secs(300),
            dns_names: vec![],
            hint: None,
            federates_with: vec![],
        }
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
}
