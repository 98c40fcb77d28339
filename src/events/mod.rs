//! The event spine: every fact the daemon establishes (a caller attested or refused, SVIDs issued,
//! an identity withdrawn, drift, a reload, a CA rotation, start) is one typed [`Event`], emitted
//! once to every subscriber. The audit log ([`audit_sink`]) is one subscriber; metrics or a live
//! inventory are added with one line in the daemon: `events.subscribe(Arc::new(MySink))`.

pub(crate) mod audit;
pub(crate) mod audit_sink;
pub(crate) mod delegation;
pub(crate) mod gateway;
pub(crate) mod guard;
mod rpc;
pub(crate) use rpc::{Call, Rpc};

use crate::spiffe_id::{SpiffeId, TrustDomain};
use std::sync::Arc;

/// One fact, with the evidence that goes with it (no keys, no tokens).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) enum Event {
    /// The daemon is serving.
    Started {
        trust_domain: TrustDomain,
        socket: std::path::PathBuf,
    },
    /// A caller was attested at the start of an RPC.
    Attested {
        rpc: Rpc,
        pid: i32,
        uid: u32,
        pinned_by_kernel: bool,
        exe: ExeEvidence,
        selectors: Vec<String>,
        /// (attestor, reason) for each attestor that failed.
        failed_attestors: Vec<(String, String)>,
        /// The caller ends refused (no entry serves this call, or a deny rule): the line counts
        /// against the uid's refusal budget in the audit log.
        refused: bool,
    },
    /// A caller got no identity.
    Refused {
        rpc: Rpc,
        pid: Option<i32>,
        uid: u32,
        why: Refusal,
    },
    /// SVIDs were handed out.
    Issued {
        rpc: Rpc,
        kind: SvidKind,
        pid: i32,
        uid: u32,
        /// When the attestation this issuance rests on completed (calls on one connection reuse
        /// one for up to a second).
        attested_at: std::time::SystemTime,
        exe: ExeEvidence,
        selectors_matched: Vec<String>,
        entries: Vec<SpiffeId>,
        issued: Vec<IssuedSvid>,
        audience: Option<Vec<String>>,
        /// Owner of each entry that has one (SPIFFE ID → owner).
        owners: Owners,
        /// The process: its start time (clock ticks since boot; with the pid it names this
        /// process), every selector it has, and the script an interpreter runs, if any.
        process: Arc<ProcessFacts>,
        /// `[policy]`'s verdict on the SVIDs handed out (None: no policy configured).
        policy: Option<Box<crate::registry::authz::Verdict>>,
    },
    /// A streaming caller stopped matching every entry; its stream ends.
    Withdrawn {
        rpc: Rpc,
        pid: i32,
        uid: u32,
        had: Vec<SpiffeId>,
        reason: String,
        owners: Owners,
    },
    /// A streaming caller's selectors changed.
    Drift {
        rpc: Rpc,
        pid: i32,
        uid: u32,
        removed: Vec<String>,
        added: Vec<String>,
        entries_before: Vec<SpiffeId>,
        owners: Owners,
        /// The executable before and after, when the drift is an exec (the digest after is
        /// not computed for this: `None` unless already known).
        exec: Option<Box<(ExeEvidence, ExeEvidence)>>,
    },
    /// An admin added a runtime revocation.
    Revoked {
        rule: Arc<crate::registry::DenyRule>,
        by_uid: u32,
        by_pid: Option<i32>,
        matched_now: MatchedNow,
    },
    /// An admin lifted a runtime revocation.
    RevocationLifted {
        rule: Arc<crate::registry::DenyRule>,
        by_uid: u32,
        by_pid: Option<i32>,
    },
    /// A new config is in force.
    Reloaded {
        why: String,
        entries: usize,
    },
    /// A new config was refused; the previous one stays.
    ReloadRefused {
        reason: String,
    },
    /// A caller the admin socket does not serve tried it.
    AdminRefused {
        uid: Option<u32>,
        pid: Option<i32>,
        method: String,
        path: String,
    },
    /// A partner's bundle endpoint served a new, valid bundle; it is in force now.
    FederatedBundleUpdated {
        trust_domain: TrustDomain,
        sequence: Option<u64>,
        x509_authorities: usize,
        jwt_keys: usize,
    },
    /// A fetch from a partner's bundle endpoint gave no usable bundle; the previous one stays.
    FederatedBundleRefused {
        trust_domain: TrustDomain,
        url: String,
        reason: String,
    },
    /// The CA's key ring changed (a successor published, or an expired key dropped).
    CaRotated,
    /// One attestation ran (at an RPC's start or a stream's re-attestation), with how long the
    /// attestors took (queueing for a slot excluded). Telemetry only: the facts are in
    /// `Attested`/`Refused`.
    AttestationFinished {
        ok: bool,
        duration: std::time::Duration,
    },
    /// A Workload API stream (FetchX509SVID, bundles) started; `StreamClosed` follows when it ends.
    StreamOpened,
    StreamClosed,
    /// A ValidateJWTSVID call checked a token (`valid`: signature, audience, expiry all good).
    JwtValidated {
        valid: bool,
    },
    /// A token exchange (granted, refused, pending) or an approval decision.
    Delegation(Box<delegation::Record>),
    /// A call through the node gateway, allowed or refused.
    GatewayCall(Box<gateway::GatewayCall>),
    /// An action at a guard (`[[guard]]`), allowed or refused.
    GuardAction(Box<guard::GuardAction>),
    /// SPIRE mode: a sync with the server ended (ok or not). `since_good_sync` is the age, in
    /// seconds, of the last good sync (the metrics gauge); `None` before the first one.
    SpireSync {
        ok: bool,
        entries: usize,
        since_good_sync: Option<u64>,
        error: Option<String>,
    },
    /// SPIRE mode: something the server sent was refused (malformed entry, bad chain); the
    /// previous state for it is kept.
    SpireRefused {
        what: String,
        reason: String,
    },
    /// SPIRE mode: the server banned or evicted this node; no identity is served any more.
    SpireAgentStopped {
        agent_id: String,
        reason: String,
    },
}

/// Why a caller got no identity.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// Attestation failed (the reason says how).
    AttestationFailed(String),
    /// No entry matches the caller's selectors.
    NoEntry { exe: ExeEvidence, selectors: Vec<String> },
    /// The caller asked for an identity it is not entitled to.
    NotEntitled(SpiffeId),
    /// Entries match, but a deny rule (config or `tessera revoke`) takes them all away.
    Revoked { rule: String, reason: String, exe: ExeEvidence, owners: Owners },
    /// `[policy]` denied the action for every entry the caller has (each with its verdict).
    Policy { action: &'static str, denied: Vec<(SpiffeId, crate::registry::authz::Verdict)> },
}

/// Owners of entries, by SPIFFE ID (entries without an owner are left out).
pub(crate) type Owners = std::collections::BTreeMap<SpiffeId, String>;

/// The owners of `entries`.
pub(crate) fn owners_of(entries: &[Arc<crate::registry::Entry>]) -> Owners {
    entries.iter().filter_map(|e| e.owner.as_ref().map(|o| (e.spiffe_id.clone(), o.clone()))).collect()
}

/// What the inventory needs to know of a process that received SVIDs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessFacts {
    /// Clock ticks since boot (/proc/PID/stat field 22).
    pub start_ticks: u64,
    pub selectors: Vec<String>,
    /// `script:path` when an interpreter runs a script.
    pub script: Option<String>,
}

/// What a new revocation affects at the moment it is made.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct MatchedNow {
    /// Configured entries it takes away (by SPIFFE ID).
    pub entries: Vec<SpiffeId>,
    /// Running workloads holding an identity that it cuts off (pids).
    pub workloads: Vec<i32>,
    /// What each of those workloads held that it cuts off (SVIDs, delegated tokens, gateway use).
    pub holders: Vec<CutOff>,
    /// Live delegated tokens (`jti`) it ends.
    pub grants: Vec<String>,
}

/// One running workload a revocation cuts off, named.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct CutOff {
    pub pid: i32,
    pub exe: Option<String>,
    /// `KIND SPIFFE_ID` per identity cut off (`x509`, `jwt`, `wit`, `delegated`, `gateway`).
    pub held: Vec<String>,
}

impl MatchedNow {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.workloads.is_empty()
    }
}

/// The kind of SVID issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SvidKind {
    X509,
    Jwt,
    Wit,
}

impl SvidKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SvidKind::X509 => "x509_svid",
            SvidKind::Jwt => "jwt_svid",
            SvidKind::Wit => "wit_svid",
        }
    }
}

/// One SVID handed out.
#[derive(Debug, Clone)]
pub(crate) enum IssuedSvid {
    X509 { spiffe_id: SpiffeId, serial: String, not_after: u64, reused_for_process: bool },
    Jwt { spiffe_id: SpiffeId, kid: String, expires_at: u64 },
    Wit { spiffe_id: SpiffeId, kid: String, expires_at: u64 },
}

/// The executable's path and digest, as the attestors found them (no selector text parsed here).
pub(crate) use tessera_attestors::ExeEvidence;

/// Something that wants every event.
pub(crate) trait Subscriber: Send + Sync {
    fn on_event(&self, event: &Event);
}

/// The spine: events go to every subscriber, in the order they subscribed.
#[derive(Clone, Default)]
pub(crate) struct Events {
    subscribers: Vec<Arc<dyn Subscriber>>,
}

impl Events {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Add a subscriber (before the spine is shared).
    pub(crate) fn subscribe(&mut self, subscriber: Arc<dyn Subscriber>) {
        self.subscribers.push(subscriber);
    }

    pub(crate) fn emit(&self, event: Event) {
        for s in &self.subscribers {
            s.on_event(&event);
        }
    }
}
