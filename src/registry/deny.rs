//! Deny rules: what must get no identity, whatever the entries say. A rule names a selector (a
//! workload having it gets nothing at all: a compromised binary, script or prompt) or a SPIFFE
//! ID (no workload gets it, and its JWT-SVIDs stop validating here). Rules come from `[[deny]]`
//! in the config and from `tessera revoke` at run time; both live in the [`Policy`](super::Policy),
//! so open streams re-evaluate the moment either changes.

use crate::spiffe_id::SpiffeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use tessera_attestors::{AttestConfig, Kind, Selector};

/// What a rule denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DenyTarget {
    /// Any workload with this selector (e.g. `unix:sha256:…`).
    Selector(Selector),
    /// This identity, for every workload.
    SpiffeId(SpiffeId),
}

impl std::fmt::Display for DenyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyTarget::Selector(s) => write!(f, "selector {s}"),
            DenyTarget::SpiffeId(id) => write!(f, "spiffe_id {id}"),
        }
    }
}

/// Who made a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub(crate) enum Origin {
    /// A `[[deny]]` block of the config file (lifted by editing the file).
    Config,
    /// `tessera revoke`, by this admin caller, at this time (unix seconds).
    Runtime { by_uid: u32, by_pid: Option<i32>, at: u64 },
}

/// One deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DenyRule {
    /// `config-N` for the N-th `[[deny]]` block, `r-XXXXXXXX` for runtime revocations.
    pub id: String,
    #[serde(flatten)]
    pub target: DenyTarget,
    pub reason: String,
    #[serde(flatten)]
    pub origin: Origin,
}

/// The rules in force: the config's and the runtime store's.
#[derive(Debug, Clone, Default)]
pub(crate) struct DenyList {
    pub config: Vec<Arc<DenyRule>>,
    pub runtime: Vec<Arc<DenyRule>>,
}

impl DenyList {
    pub(crate) fn rules(&self) -> impl Iterator<Item = &Arc<DenyRule>> {
        self.config.iter().chain(self.runtime.iter())
    }

    /// The first rule denying a workload with these selectors outright. Fail closed: while a
    /// rule names an executable (or script) digest, a workload whose digest could not be computed
    /// (too large, hashing budget spent) is denied too, or exhausting one's budget would be a
    /// way around the rule. For scripts that means every interpreter process without a script
    /// digest, whatever the reason: the script attestor withholds its selectors when the
    /// environment or command line could make the interpreter run other code (`PYTHONPATH`,
    /// `-c`, an unknown option), and the revoked script may be what then runs.
    pub(crate) fn denies_workload(&self, selectors: &BTreeSet<Selector>) -> Option<Arc<DenyRule>> {
        if let Some(r) = self.rules().find(|r| matches!(&r.target, DenyTarget::Selector(s) if selectors.contains(s))) {
            return Some(r.clone());
        }
        let has =
            |kind: Kind, prefix: &str| selectors.iter().any(|s| s.kind() == kind && s.value().starts_with(prefix));
        let digest_rule = |kind: Kind| {
            self.rules().find(|r| {
                matches!(&r.target, DenyTarget::Selector(s) if s.kind() == kind && s.value().starts_with("sha256:"))
            })
        };
        let missing = match digest_rule(Kind::Unix) {
            Some(r) if !has(Kind::Unix, "sha256:") => Some((r, "executable")),
            _ => match digest_rule(Kind::Script) {
                Some(r) if has(Kind::Script, "interpreter:") && !has(Kind::Script, "sha256:") => Some((r, "script")),
                _ => None,
            },
        };
        missing.map(|(r, what)| {
            Arc::new(DenyRule {
                id: format!("{}-digest-unavailable", r.id),
                target: r.target.clone(),
                reason: format!("the {what} digest could not be computed while rule {} denies by digest", r.id),
                origin: r.origin.clone(),
            })
        })
    }

    /// Attestor settings that compute every digest and config file the rules name (else a rule
    /// on `unix:sha256:…` would never see the selector it names).
    pub(crate) fn attest_config(&self, base: &AttestConfig) -> AttestConfig {
        let mut c = base.clone();
        for r in self.rules() {
            if let DenyTarget::Selector(s) = &r.target {
                let digest = s.value().starts_with("sha256:");
                match s.kind() {
                    Kind::Unix if digest => c.want_exe_digest = true,
                    Kind::Script if digest => c.want_script_digest = true,
                    _ => {}
                }
                if let Some(p) = tessera_attestors::config_path_of(s)
                    && !c.config_paths.contains(&p)
                {
                    c.config_paths.push(p);
                }
            }
        }
        c
    }

    /// The first rule denying this identity.
    pub(crate) fn denies_id(&self, id: &SpiffeId) -> Option<&Arc<DenyRule>> {
        self.rules().find(|r| matches!(&r.target, DenyTarget::SpiffeId(d) if d == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, target: DenyTarget) -> Arc<DenyRule> {
        Arc::new(DenyRule { id: id.into(), target, reason: "test".into(), origin: Origin::Config })
    }

    #[test]
    fn selector_and_id_rules_match_what_they_name() {
        let sel: Selector = format!("unix:sha256:{}", "a".repeat(64)).parse().unwrap();
        let id: SpiffeId = "spiffe://t/a".parse().unwrap();
        let list = DenyList {
            config: vec![rule("config-0", DenyTarget::Selector(sel.clone()))],
            runtime: vec![rule("r-1", DenyTarget::SpiffeId(id.clone()))],
        };
        let wl: BTreeSet<Selector> = [sel, "unix:uid:1".parse().unwrap()].into();
        assert_eq!(list.denies_workload(&wl).map(|r| r.id.clone()).as_deref(), Some("config-0"));
        // Fail closed: without an executable digest, a digest rule cannot be checked, so no identity.
        let no_digest = list.denies_workload(&["unix:uid:1".parse().unwrap()].into()).unwrap();
        assert_eq!(no_digest.id, "config-0-digest-unavailable");
        let other: Selector = format!("unix:sha256:{}", "b".repeat(64)).parse().unwrap();
        assert!(list.denies_workload(&[other, "unix:uid:1".parse().unwrap()].into()).is_none());
        // The rule makes the attestor compute the digest it names.
        let base = AttestConfig { want_exe_digest: false, want_script_digest: false, ..Default::default() };
        let c = list.attest_config(&base);
        assert!(c.want_exe_digest && !c.want_script_digest);
        assert_eq!(list.denies_id(&id).map(|r| r.id.as_str()), Some("r-1"));
        assert!(list.denies_id(&"spiffe://t/b".parse().unwrap()).is_none());
    }

    #[test]
    fn a_script_digest_rule_denies_every_interpreter_without_a_script_digest() {
        let evil: Selector = format!("script:sha256:{}", "e".repeat(64)).parse().unwrap();
        let list = DenyList { config: vec![], runtime: vec![rule("r-2", DenyTarget::Selector(evil.clone()))] };
        let sels = |extra: &[&str]| -> BTreeSet<Selector> {
            ["unix:uid:1", "unix:path:/usr/bin/python3.13"].iter().chain(extra).map(|s| s.parse().unwrap()).collect()
        };
        // The script attestor withheld path and digest (PYTHONPATH set, `-c`, an unknown option).
        let withheld = list.denies_workload(&sels(&["script:interpreter:python3"])).unwrap();
        assert_eq!(withheld.id, "r-2-digest-unavailable");
        // Path without digest (the digest could not be computed): denied as before.
        assert!(list.denies_workload(&sels(&["script:interpreter:python3", "script:path:/srv/a.py"])).is_some());
        // Another script's digest: not denied; the revoked one's: denied by the rule itself.
        let other = format!("script:sha256:{}", "a".repeat(64));
        assert!(list.denies_workload(&sels(&["script:interpreter:python3", &other])).is_none());
        assert_eq!(list.denies_workload(&sels(&[&evil.to_string()])).unwrap().id, "r-2");
        // Not an interpreter: nothing to withhold, nothing denied.
        assert!(list.denies_workload(&sels(&[])).is_none());
    }

    #[test]
    fn rules_round_trip_as_json() {
        let r = DenyRule {
            id: "r-0a".into(),
            target: DenyTarget::SpiffeId("spiffe://t/a".parse().unwrap()),
            reason: "leaked".into(),
            origin: Origin::Runtime { by_uid: 0, by_pid: Some(7), at: 5 },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "id": "r-0a", "spiffe_id": "spiffe://t/a", "reason": "leaked",
                                "source": "runtime", "by_uid": 0, "by_pid": 7, "at": 5 })
        );
        assert_eq!(serde_json::from_value::<DenyRule>(v).unwrap(), r);
    }
}
