//! Authorization at the point of action: the operator's Cedar policies (`[policy]`), decided for
//! every Workload API fetch, token exchange, gateway call and guarded request.
//!
//! The policy set is part of the [`Policy`](super::Policy) snapshot, swapped whole on reload: a
//! request decides on the set in force when it read the snapshot, and open streams are
//! re-decided when a new one is published. Semantics are Cedar's (default deny, a `forbid`
//! wins) with one change that fails closed: a policy that errors while evaluated (a tag the
//! principal does not have, an overflow) makes the decision a deny, where Cedar would skip it
//! (a skipped `forbid` would otherwise allow).
//!
//! [`schema`] is the schema tessera ships (`tessera policy schema`); [`load`] reads, validates
//! and indexes the files; [`ask`] builds the typed request. Without `[policy]` there is no
//! [`Authz`] and every caller behaves exactly as before.

mod ask;
#[doc(hidden)]
pub(crate) mod bench;
mod load;
pub(crate) mod schema;
#[cfg(test)]
mod tests;

pub(crate) use ask::{Ask, Ctx, Resource, What};
#[cfg(test)]
use load::LoadError;
pub(crate) use load::PolicyFiles;

use cedar_policy::{Authorizer, Decision, Entities, Request};
use std::collections::HashMap;

/// `[policy] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A deny refuses the action.
    Enforce,
    /// Decide and audit what would have happened; allow.
    Log,
}

/// What the audit line says (`policy_decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyDecision {
    Allow,
    Deny,
    /// Log mode: a deny that was let through.
    WouldDeny,
}

impl PolicyDecision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PolicyDecision::Allow => "allow",
            PolicyDecision::Deny => "deny",
            PolicyDecision::WouldDeny => "would_deny",
        }
    }
}

/// One decision: what it was, the determining policies, and why it errored (if it did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub decision: PolicyDecision,
    /// The determining policies' IDs: the satisfied permits of an allow, the satisfied forbids
    /// (or the erroring policies) of a deny; empty for a default deny (no policy permits).
    pub policies: Vec<String>,
    /// Evaluation errors and request-building errors, each naming its policy.
    pub errors: Vec<String>,
}

impl Verdict {
    /// Whether the action goes ahead (always, in log mode).
    pub(crate) fn permits(&self) -> bool {
        self.decision != PolicyDecision::Deny
    }

    /// A one-line reason for a refusal, for the caller and the log.
    pub(crate) fn reason(&self) -> String {
        if let Some(e) = self.errors.first() {
            format!("denied by policy: evaluation error ({e})")
        } else if self.policies.is_empty() {
            "denied by policy: no policy permits this".into()
        } else {
            format!("denied by policy {}", self.policies.join(", "))
        }
    }

    /// Fold another permitted verdict into this one (one audit line for several decisions).
    pub(crate) fn merge(&mut self, other: Verdict) {
        if other.decision == PolicyDecision::WouldDeny {
            self.decision = PolicyDecision::WouldDeny;
        }
        self.policies.extend(other.policies);
        self.policies.sort();
        self.policies.dedup();
        self.errors.extend(other.errors);
    }

    /// The audit members every decision's line carries.
    pub(crate) fn audit(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "policy_decision": self.decision.as_str(),
            "policies": self.policies,
        });
        if !self.errors.is_empty() {
            v["policy_errors"] = self.errors.clone().into();
        }
        v
    }
}

/// The loaded policy set, validated against the schema and indexed by action.
pub(crate) struct Authz {
    pub mode: Mode,
    /// The policies that can apply to each action (`action ==`, `action in [..]`, or none).
    by_action: HashMap<What, load::ActionSets>,
    /// How many policies were loaded, and from which files (for `check` and the log).
    pub count: usize,
    pub files: Vec<std::path::PathBuf>,
    /// Problems worth a warning (a policy that permits everything).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz")
            .field("mode", &self.mode)
            .field("count", &self.count)
            .field("files", &self.files)
            .finish()
    }
}

impl Authz {
    /// Decide `ask`. Never panics; an input that cannot be built into a Cedar request denies.
    pub(crate) fn decide(&self, ask: &Ask<'_>) -> Verdict {
        let verdict = self.decide_enforced(ask);
        match (self.mode, verdict.decision) {
            (Mode::Log, PolicyDecision::Deny) => Verdict { decision: PolicyDecision::WouldDeny, ..verdict },
            _ => verdict,
        }
    }

    fn decide_enforced(&self, ask: &Ask<'_>) -> Verdict {
        let deny = |errors: Vec<String>| Verdict { decision: PolicyDecision::Deny, policies: Vec::new(), errors };
        let built = match ask.build() {
            Ok(b) => b,
            Err(e) => return deny(vec![e]),
        };
        let Some(sets) = self.by_action.get(&ask.what) else {
            return deny(Vec::new());
        };
        let set = sets.for_principal(&built.principal_id);
        let request = match Request::new(built.principal, built.action, built.resource, built.context, None) {
            Ok(r) => r,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let entities = match Entities::from_entities(built.entities, None) {
            Ok(e) => e,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let response = Authorizer::new().is_authorized(&request, set, &entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            // Fail closed: Cedar skips an erroring policy, which could be the forbid that mattered.
            let policies = response
                .diagnostics()
                .errors()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(p) => p.policy_id().to_string(),
                })
                .collect();
            return Verdict { decision: PolicyDecision::Deny, policies, errors };
        }
        let policies = response.diagnostics().reason().map(|p| p.to_string()).collect();
        let decision = match response.decision() {
            Decision::Allow => PolicyDecision::Allow,
            Decision::Deny => PolicyDecision::Deny,
        };
        Verdict { decision, policies, errors }
    }
}
