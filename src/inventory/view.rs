//! `GET /inventory`: the stable JSON document (version 1, documented in docs/inventory.md).

use super::{Inventory, RefusalRecord, Workload};
use crate::net::http::{self, Answer, Method, Request};
use crate::registry::{DenyRule, DenyTarget, MetaValue, Policy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Refusals listed unless `?refusals=N` asks for another number (at most the kept 256).
const DEFAULT_REFUSALS: usize = 20;

#[derive(Serialize)]
pub(crate) struct InventoryDoc {
    pub version: u32,
    pub generated_at: u64,
    pub entries: Vec<EntryView>,
    pub workloads: Vec<WorkloadView>,
    pub refusals: Vec<RefusalRecord>,
    pub revocations: Vec<DenyRule>,
    /// Per agent (SPIFFE ID): the gateway routes it called and its last call.
    pub gateway: BTreeMap<String, super::GatewayUse>,
    /// Live (unexpired) delegated tokens, soonest expiry first.
    pub grants: Vec<super::Grant>,
    /// Agent-like processes without an identity from the daemon's last discovery scan
    /// (`[discovery] interval`; empty when it does not scan), each with its pid's refusals.
    pub unmanaged: Vec<UnmanagedView>,
    /// When that scan ran (unix seconds; null: never).
    pub unmanaged_scanned_at: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct UnmanagedView {
    #[serde(flatten)]
    pub agent: crate::discovery::Found,
    /// Refusals (kept, newest last) on any socket from this pid.
    pub refusals: Vec<RefusalRecord>,
}

#[derive(Serialize)]
pub(crate) struct EntryView {
    pub spiffe_id: String,
    pub owner: Option<String>,
    pub metadata: BTreeMap<String, MetaValue>,
    /// `active` or `retired`.
    pub status: &'static str,
    pub selectors: Vec<String>,
    /// Deny rules that take this identity away (by SPIFFE ID).
    pub revoked_by: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct WorkloadView {
    pub pid: i32,
    /// Unix seconds.
    pub start_time: u64,
    pub uid: u32,
    pub exe: crate::events::ExeEvidence,
    pub script: Option<String>,
    pub connected_since: u64,
    pub identities: Vec<super::Held>,
}

impl WorkloadView {
    fn of(w: Workload) -> Self {
        WorkloadView {
            pid: w.pid,
            start_time: super::process::start_unix(w.start_ticks),
            uid: w.uid,
            exe: w.exe,
            script: w.script,
            connected_since: w.connected_since,
            identities: w.held.into_values().collect(),
        }
    }
}

/// The document for the policy in force and the live state.
pub(crate) fn document(inventory: &Inventory, policy: &Policy, refusals: usize) -> InventoryDoc {
    let entries = policy
        .registry
        .entries()
        .iter()
        .map(|e| EntryView {
            spiffe_id: e.spiffe_id.to_string(),
            owner: e.owner.clone(),
            metadata: e.metadata.clone(),
            status: if e.retired { "retired" } else { "active" },
            selectors: e.selectors.iter().map(|s| s.to_string()).collect(),
            revoked_by: policy
                .deny
                .rules()
                .filter(|r| matches!(&r.target, DenyTarget::SpiffeId(id) if *id == e.spiffe_id))
                .map(|r| r.id.clone())
                .collect(),
        })
        .collect();
    let (workloads, refusals) = inventory.snapshot(refusals);
    let (unmanaged_scanned_at, unmanaged) = inventory.unmanaged();
    InventoryDoc {
        version: 1,
        generated_at: inventory.now_unix(),
        entries,
        workloads: workloads.into_iter().map(WorkloadView::of).collect(),
        refusals,
        revocations: policy.deny.rules().map(|r| (**r).clone()).collect(),
        gateway: inventory.gateway(),
        grants: inventory.grants(),
        unmanaged: unmanaged.into_iter().map(|(agent, refusals)| UnmanagedView { agent, refusals }).collect(),
        unmanaged_scanned_at,
    }
}

/// `?refusals=N`.
fn refusals_wanted(request: &Request) -> usize {
    request
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("refusals=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REFUSALS)
        .min(super::MAX_REFUSALS)
}

/// Register `GET /inventory` on the admin socket.
pub(crate) fn routes(
    routes: &mut crate::net::http::Routes,
    inventory: Arc<Inventory>,
    policy: watch::Receiver<Arc<Policy>>,
) {
    routes.add(Method::GET, "/inventory", move |request: Request| {
        let inventory = inventory.clone();
        let policy = policy.borrow().clone();
        async move {
            let n = refusals_wanted(&request);
            // /proc reads for liveness: off the async threads.
            match tokio::task::spawn_blocking(move || document(&inventory, &policy, n)).await {
                Ok(doc) => http::json(Answer::Ok, &doc),
                Err(e) => {
                    http::json(Answer::Internal, &serde_json::json!({ "error": "internal", "message": e.to_string() }))
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::events::{Event, Refusal, Subscriber};

    /// An unmanaged agent found by discovery is linked to its pid's refusals; pids holding
    /// identities are left out.
    #[test]
    fn unmanaged_agents_are_linked_to_their_refusals() {
        let inv = super::Inventory::default();
        inv.on_event(&Event::Refused {
            rpc: crate::events::Call::FetchX509Svid.into(),
            pid: Some(4242),
            uid: 1,
            why: Refusal::AttestationFailed("x".into()),
        });
        let found = |pid| crate::discovery::Found {
            pid,
            uid: Some(1),
            exe: "/usr/bin/python3".into(),
            script: None,
            signatures: vec!["python openai".into()],
            secret_env: vec!["OPENAI_API_KEY".into()],
            environ: "read".into(),
        };
        assert_eq!(inv.unmanaged().0, None);
        assert_eq!(inv.set_unmanaged(vec![found(4242), found(4343)]), 2);
        let (at, linked) = inv.unmanaged();
        assert!(at.is_some());
        assert_eq!((linked[0].1.len(), linked[1].1.len()), (1, 0));
        assert_eq!(linked[0].1[0].pid, Some(4242));
    }
}
