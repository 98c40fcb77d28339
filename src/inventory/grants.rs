//! Live grants: the delegated tokens the token socket issued and that have not expired (fed by
//! `delegation_granted` events), and the processes holding them or using the node gateway, which
//! are workloads like SVID holders. Bounded: at most [`MAX_GRANTS`] grants (the soonest to expire
//! makes room), expired ones dropped on every read and sweep.

use super::{Held, Inventory, State, holder, process};
use crate::events::ExeEvidence;
use crate::events::delegation::{Outcome, Record};
use crate::events::gateway::GatewayCall;
use crate::peer::ProcessKey;
use crate::spiffe_id::SpiffeId;
use serde::Serialize;
use serde_json::Value;

/// Grants kept at most.
pub(crate) const MAX_GRANTS: usize = 4096;
/// A process that called through the gateway is listed this long after its last call (while it runs).
const GATEWAY_HELD_SECS: u64 = 600;

/// Who approved a grant that needed approval.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GrantApproval {
    /// `uid:N` (admin socket) or the user's `sub` (their own token).
    pub approver: Option<String>,
    pub approved_at: u64,
}

/// One live delegated token (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Grant {
    pub jti: String,
    /// The agent's SPIFFE ID (the token's outermost actor).
    pub agent: Option<String>,
    /// The agent entry's owner.
    pub owner: Option<String>,
    /// The process it was issued to.
    pub pid: Option<i32>,
    /// The end user (`sub`).
    pub user: Option<String>,
    /// The `act` chain, outermost (this agent) first.
    pub act_chain: Vec<String>,
    pub scope: Vec<String>,
    pub audience: Option<String>,
    pub authorization_details: Option<Value>,
    pub issued_at: u64,
    pub expires_at: u64,
    /// `null` when the grant needed no approval.
    pub approval: Option<GrantApproval>,
}

impl Inventory {
    /// A `delegation_granted` record: its grant, and its agent process as a workload.
    pub(super) fn delegated(&self, rec: &Record) {
        if rec.outcome != Outcome::Granted {
            return;
        }
        let (Some(jti), Some(expires_at)) = (&rec.jti, rec.expires_at) else { return };
        let now = self.now_unix();
        if expires_at <= now {
            return;
        }
        let a = &rec.agent;
        let grant = Grant {
            jti: jti.clone(),
            agent: a.spiffe_id.clone(),
            owner: a.owner.clone(),
            pid: a.pid,
            user: rec.user.clone(),
            act_chain: rec.chain.clone(),
            scope: rec.scopes_granted.clone(),
            audience: rec.audience.clone(),
            authorization_details: rec.authorization_details.clone(),
            issued_at: now,
            expires_at,
            approval: rec.approved_at.map(|at| GrantApproval { approver: rec.approver.clone(), approved_at: at }),
        };
        let mut state = self.lock();
        add_grant(&mut state, grant);
        let (Some(pid), Some(start_ticks), Some(uid), Some(id)) =
            (a.pid, a.start_ticks, a.uid, a.spiffe_id.as_deref().and_then(|i| i.parse::<SpiffeId>().ok()))
        else {
            return;
        };
        let exe = a.exe.clone().unwrap_or(ExeEvidence { path: None, sha256: None });
        let w = holder(&mut state, ProcessKey { pid, start_ticks }, uid, &exe, now);
        if !a.selectors.is_empty() {
            w.selectors = a.selectors.clone();
        }
        hold(w, "delegated", id, expires_at, a.owner.clone());
    }

    /// An allowed gateway call of an attested process: that process is a workload (listed
    /// [`GATEWAY_HELD_SECS`] after its last call while it runs).
    pub(super) fn gateway_holder(&self, c: &GatewayCall) {
        let (true, Some(pid), Some(uid), Some(id)) =
            (c.allowed, c.pid, c.uid, c.agent.as_deref().and_then(|i| i.parse::<SpiffeId>().ok()))
        else {
            return;
        };
        // The start time names the process (a small /proc read; gone already: nothing to list).
        let Some(start_ticks) = process::start_ticks(pid) else { return };
        let now = self.now_unix();
        let exe = c.exe.clone().unwrap_or(ExeEvidence { path: None, sha256: None });
        let mut state = self.lock();
        let w = holder(&mut state, ProcessKey { pid, start_ticks }, uid, &exe, now);
        hold(w, "gateway", id, now + GATEWAY_HELD_SECS, None);
    }
}

fn add_grant(state: &mut State, grant: Grant) {
    if !state.grants.contains_key(&grant.jti) && state.grants.len() >= MAX_GRANTS {
        // Make room: the grant that expires soonest goes.
        if let Some(soonest) = state.grants.values().min_by_key(|g| g.expires_at).map(|g| g.jti.clone()) {
            tracing::debug!("inventory grants full ({MAX_GRANTS}): dropping the one expiring soonest");
            state.grants.remove(&soonest);
        }
    }
    state.grants.insert(grant.jti.clone(), grant);
}

fn hold(w: &mut super::Workload, kind: &'static str, id: SpiffeId, expires_at: u64, owner: Option<String>) {
    let key = (kind, id.clone());
    let expires_at = w.held.get(&key).map_or(expires_at, |h| h.expires_at.max(expires_at));
    let owner = owner.or_else(|| w.held.get(&key).and_then(|h| h.owner.clone()));
    w.held.insert(
        key,
        Held {
            spiffe_id: id,
            kind,
            serial: None,
            kid: None,
            expires_at,
            owner,
            status: "active",
            withdrawn_reason: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::delegation::AgentEvidence;
    use crate::events::{Event, Subscriber};
    use std::sync::Arc;
    use std::time::Duration;

    fn own_start() -> u64 {
        process::start_ticks(std::process::id() as i32).unwrap()
    }

    fn granted(jti: &str, exp: u64) -> Event {
        let mut rec = Record::new(
            Outcome::Granted,
            AgentEvidence {
                pid: Some(std::process::id() as i32),
                uid: Some(0),
                spiffe_id: Some("spiffe://t/agent".into()),
                start_ticks: Some(own_start()),
                owner: Some("team".into()),
                ..AgentEvidence::default()
            },
        );
        rec.jti = Some(jti.into());
        rec.expires_at = Some(exp);
        rec.user = Some("alice".into());
        rec.chain = vec!["spiffe://t/agent".into()];
        rec.scopes_granted = vec!["read".into()];
        rec.audience = Some("https://api".into());
        rec.approver = Some("uid:0".into());
        rec.approved_at = Some(5);
        Event::Delegation(Box::new(rec))
    }

    #[test]
    fn grants_are_listed_until_they_expire_and_their_agent_is_a_workload() {
        let clock = Arc::new(crate::clock::FakeClock::at_unix(1_700_000_000));
        let inv = Inventory::with_clock(clock.clone());
        let now = inv.now_unix();
        inv.on_event(&granted("j1", now + 60));
        inv.on_event(&granted("j2", now + 600));
        inv.on_event(&granted("old", now - 1));
        let g = inv.grants();
        assert_eq!(g.iter().map(|g| g.jti.as_str()).collect::<Vec<_>>(), ["j1", "j2"]);
        assert_eq!(g[0].user.as_deref(), Some("alice"));
        assert_eq!(g[0].approval.as_ref().map(|a| a.approved_at), Some(5));
        let (w, _) = inv.snapshot(0);
        assert_eq!(w.len(), 1);
        let h = w[0].held.values().next().unwrap();
        assert_eq!((h.kind, h.expires_at, h.owner.as_deref()), ("delegated", now + 600, Some("team")));
        clock.advance(Duration::from_secs(60));
        assert_eq!(inv.grants().len(), 1);
        inv.prune();
        assert_eq!(inv.lock().grants.len(), 1);
    }

    #[test]
    fn grants_are_bounded() {
        let inv = Inventory::default();
        let now = inv.now_unix();
        for i in 0..(MAX_GRANTS as u64 + 5) {
            inv.on_event(&granted(&format!("j{i}"), now + 100 + i));
        }
        let g = inv.grants();
        assert_eq!(g.len(), MAX_GRANTS);
        assert_eq!(g[0].jti, "j5", "the soonest to expire made room");
    }
}
