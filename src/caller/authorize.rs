//! The policy decision on a caller's entries: keep the entries `[policy]` lets do this action,
//! refuse (and audit) when none is left. Without `[policy]` nothing changes.

use super::{Caller, CallerError};
use crate::events::{Event, Events, Refusal, Rpc};
use crate::registry::Entry;
use crate::registry::authz::{Ask, Ctx, PolicyDecision, Resource, Verdict, What};

impl Caller {
    /// Decide `what` for each of the caller's entries, on `resource` (`None`: the agent itself)
    /// and keep those permitted. The returned verdict sums up the permitted ones for the audit
    /// line (`would_deny` when log mode let a deny through); `None` without `[policy]`.
    pub(crate) fn authorize(
        &mut self,
        what: What,
        resource: Option<Resource<'_>>,
        rpc: Rpc,
        events: &Events,
    ) -> Result<Option<Verdict>, CallerError> {
        let Some(authz) = self.policy.authz.clone() else { return Ok(None) };
        let selectors = super::selector_strings(&self.attestation.selectors);
        let mut kept = Vec::with_capacity(self.entries.len());
        let mut denied = Vec::new();
        let mut sum = Verdict { decision: PolicyDecision::Allow, policies: Vec::new(), errors: Vec::new() };
        for e in &self.entries {
            let entry: &Entry = e;
            let own_id = entry.spiffe_id.to_string();
            let v = authz.decide(&Ask {
                what,
                principal: &entry.spiffe_id,
                entry: Some(entry),
                selectors: Some(&selectors),
                resource: resource.unwrap_or(Resource::Agent(&own_id)),
                ctx: Ctx::default(),
            });
            if v.permits() {
                if v.decision == PolicyDecision::WouldDeny {
                    sum.decision = PolicyDecision::WouldDeny;
                }
                sum.policies.extend(v.policies.iter().cloned());
                sum.errors.extend(v.errors.iter().cloned());
                kept.push(e.clone());
            } else {
                denied.push((entry.spiffe_id.clone(), v));
            }
        }
        sum.policies.sort();
        sum.policies.dedup();
        if kept.is_empty() && !denied.is_empty() {
            let reason = denied.iter().map(|(id, v)| format!("{id}: {}", v.reason())).collect::<Vec<_>>().join("; ");
            events.emit(Event::Refused {
                rpc,
                pid: Some(self.attestation.pid),
                uid: self.uid,
                why: Refusal::Policy { action: what.name(), denied },
            });
            return Err(CallerError::DeniedByPolicy(reason));
        }
        self.entries = kept;
        Ok(Some(sum))
    }
}
