//! The caller pipeline every service on the socket uses: peer → attestation (bounded, off the
//! async runtime) → matching registration entries = a [`Caller`]. Each step emits its event
//! (attested, refused). Services add only what their RPC needs on top. A connection's calls
//! reuse its last full attestation briefly ([`session`]).

mod authorize;
pub(crate) mod session;

use crate::clock::Clock;
use crate::events::{Event, Events, Refusal, Rpc};
use crate::limits::FairSlots;
use crate::peer::PeerInfo;
use crate::registry::{Entry, NotEntitled, Policy};
use crate::spiffe_id::SpiffeId;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tessera_attestors::{Attestation, ProcessHandle, Selector};
use tokio::sync::watch;

/// Why a caller gets no identity (becomes a gRPC status in `endpoint::status`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallerError {
    #[error("workload attestation failed: peer credentials unavailable")]
    NoPeerCredentials,
    #[error("shutting down")]
    ShuttingDown,
    #[error("attestation task failed: {0}")]
    AttestTask(String),
    /// The policy changed the attestor's settings during each of several attestations in a row.
    #[error("workload attestation failed: the policy changed while attesting; try again")]
    PolicyChanging,
    #[error("workload attestation failed: {0}")]
    Attestation(tessera_attestors::AttestError),
    #[error("no identity issued")]
    NoIdentity,
    #[error("no identity issued for {0}")]
    NotEntitled(SpiffeId),
    /// A deny rule takes away every entry the caller matches (the rule ID only: the reason is
    /// for operators, in the audit log).
    #[error("no identity issued: revoked by rule {0}")]
    Revoked(String),
    /// `[policy]` permits none of the caller's entries this action (the determining policies).
    #[error("{0}")]
    DeniedByPolicy(String),
}

/// The caller as attested, plus the entries it matched (cheap to clone: shared parts).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Shared by every open stream of the same process that attested the same (see [`Shared`]).
    pub attestation: Arc<Attestation>,
    pub uid: u32,
    /// Shared with the registry: a stream holds pointers, not copies.
    pub entries: Vec<Arc<Entry>>,
    /// The policy snapshot the entries came from.
    pub policy: Arc<Policy>,
    /// When the full attestation behind this caller completed (a connection's later calls may
    /// reuse it briefly; issuance audit lines carry it).
    pub attested_at: std::time::SystemTime,
}

impl Caller {
    /// The process this caller is.
    pub(crate) fn process(&self) -> crate::peer::ProcessKey {
        crate::peer::ProcessKey { pid: self.attestation.pid, start_ticks: self.attestation.starttime }
    }

    /// Keep only the entry for `id`; none → `NotEntitled`, emitted as a refusal.
    pub(crate) fn narrow_to(&mut self, id: &SpiffeId, rpc: Rpc, events: &Events) -> Result<(), CallerError> {
        self.entries.retain(|e| &e.spiffe_id == id);
        if self.entries.is_empty() {
            events.emit(Event::Refused {
                rpc,
                pid: Some(self.attestation.pid),
                uid: self.uid,
                why: Refusal::NotEntitled(id.clone()),
            });
            return Err(CallerError::NotEntitled(id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
impl Caller {
    /// A caller for unit tests: one process entitled to `id` alone (as a service sees it after
    /// narrowing), with an empty policy.
    #[allow(clippy::unwrap_used, reason = "test values")]
    pub(crate) fn for_test(id: &str) -> Caller {
        let attestation = Attestation {
            pid: 4242,
            starttime: 1,
            selectors: BTreeSet::new(),
            reports: vec![],
            exe: Default::default(),
            watched_files: vec![],
        };
        let policy = Policy {
            registry: crate::registry::Registry::new(vec![]),
            attestor: Arc::new(tessera_attestors::Attestor::new(Default::default())),
            jwt_issuer: None,
            federated: Default::default(),
            deny: Default::default(),
            attest_base: Default::default(),
            delegation_issuers: Default::default(),
            authz: None,
            detail_types: Default::default(),
        };
        Caller {
            attestation: Arc::new(attestation),
            uid: 1000,
            entries: vec![Arc::new(Entry::for_test(id, &["unix:uid:1000"]))],
            policy: Arc::new(policy),
            attested_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }
}

/// Attest, then entitle.
pub(crate) struct Pipeline {
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Attestations running at once (each may hash files on a blocking thread).
    pub attest_slots: FairSlots,
    pub events: Events,
    /// Where everything that serves a caller reads the time: issuance, validation, streams,
    /// token exchange, this connection's session window.
    pub clock: Arc<dyn Clock>,
    /// Attestations held by callers, one copy per process and result.
    shared: Shared,
    /// Each connection's last full attestation, reused briefly.
    sessions: session::Sessions,
}

impl Pipeline {
    pub(crate) fn new(
        policy: watch::Receiver<Arc<Policy>>,
        attest_slots: FairSlots,
        events: Events,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let sessions = session::Sessions::new(clock.clone());
        Self { policy, attest_slots, events, clock, shared: Shared::default(), sessions }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }

    /// Attest the peer with the attestor settings of `policy`. Failure → refused (emitted).
    pub(crate) async fn attest(&self, peer: &PeerInfo, rpc: Rpc, policy: &Policy) -> Result<Attestation, CallerError> {
        self.attest_pinned(peer, rpc, policy, None).await.map(|(attestation, ..)| attestation)
    }

    /// Attest under the policy in force, and return the policy to judge the attestation by: the
    /// one in force when it ended. A revocation or reload during a long attestation (hashing a
    /// large file) so applies to this call, not only to the next one; when the new policy needs
    /// other attestor settings (a digest rule), the process is attested again (at most twice).
    pub(crate) async fn attest_current(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
    ) -> Result<(Attestation, Arc<Policy>), CallerError> {
        self.attest_settled(peer, rpc, None).await.map(|(attestation, _, _, policy)| (attestation, policy))
    }

    async fn attest_settled(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
        session: Option<std::time::SystemTime>,
    ) -> Result<(Attestation, ProcessHandle, Option<session::Baseline>, Arc<Policy>), CallerError> {
        let mut policy = self.policy();
        for _ in 0..3 {
            let (attestation, handle, baseline) = self.attest_pinned(peer, rpc, &policy, session).await?;
            let now = self.policy();
            if Arc::ptr_eq(&now, &policy) || now.attestor.config() == policy.attestor.config() {
                return Ok((attestation, handle, baseline, now));
            }
            policy = now;
        }
        Err(CallerError::PolicyChanging)
    }

    /// [`Self::attest`], also returning the pinned process (for cheap re-checks between full
    /// attestations: alive, same credentials, same executable); with `session` (when the
    /// attestation started), also the baseline for keeping it as the connection's session, if
    /// one may be kept.
    async fn attest_pinned(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
        policy: &Policy,
        session: Option<std::time::SystemTime>,
    ) -> Result<(Attestation, ProcessHandle, Option<session::Baseline>), CallerError> {
        // Bounded concurrency: one user opening hundreds of connections to slow binaries must not
        // take every blocking thread, and so every other workload's attestation, with it.
        let _slot = self.attest_slots.acquire(peer.uid).await.map_err(|_| CallerError::ShuttingDown)?;
        let attestor = policy.attestor.clone();
        let creds = peer.credentials();
        let started = std::time::Instant::now();
        let result = off_async(move || {
            let handle = ProcessHandle::from_peer(creds)?;
            // Read before the attestation's final check that the process is still the pinned one.
            let cmdline = session.and_then(|_| handle.cmdline_raw().ok());
            let attestation = attestor.attest(&handle)?;
            let baseline = cmdline.zip(session).and_then(|(cmdline, started)| {
                session::Baseline::gather(&handle, cmdline, &attestation.watched_files, started)
            });
            Ok::<_, tessera_attestors::AttestError>((attestation, handle, baseline))
        })
        .await?;
        self.events.emit(Event::AttestationFinished { ok: result.is_ok(), duration: started.elapsed() });
        result.map_err(|e| {
            self.events.emit(Event::Refused {
                rpc,
                pid: peer.pid,
                uid: peer.uid,
                why: Refusal::AttestationFailed(e.to_string()),
            });
            // Debug only: any local user can make these at will; the audit log records them
            // under the uid's refusal budget, and the journal's rate limit must not drop the
            // lines that matter (the audit anchors) for them.
            tracing::debug!(%rpc, pid = ?peer.pid, uid = peer.uid, error = %e, "workload attestation failed");
            CallerError::Attestation(e)
        })
    }

    /// The entries an attested workload matches in `policy`; none → `NoIdentity`, emitted as a refusal.
    pub(crate) fn entitle(
        &self,
        attestation: Attestation,
        peer: &PeerInfo,
        rpc: Rpc,
        policy: Arc<Policy>,
    ) -> Result<Caller, CallerError> {
        let entitled = entitlement(&attestation, &policy);
        self.conclude(attestation, peer, rpc, policy, entitled)
    }

    /// A [`Caller`] from an entitlement, or its refusal, emitted and logged.
    fn conclude(
        &self,
        attestation: Attestation,
        peer: &PeerInfo,
        rpc: Rpc,
        policy: Arc<Policy>,
        entitled: Result<Vec<Arc<Entry>>, NotEntitled>,
    ) -> Result<Caller, CallerError> {
        let uid = peer.uid;
        let entries = match entitled {
            Ok(entries) => entries,
            Err(NotEntitled::Denied(rule)) => {
                let owners = crate::events::owners_of(
                    &policy.registry.matching(&attestation.selectors).into_iter().cloned().collect::<Vec<_>>(),
                );
                self.events.emit(Event::Refused {
                    rpc,
                    pid: Some(attestation.pid),
                    uid,
                    why: Refusal::Revoked {
                        rule: rule.id.clone(),
                        reason: rule.reason.clone(),
                        exe: attestation.exe.clone(),
                        owners,
                    },
                });
                tracing::debug!(%rpc, pid = attestation.pid, uid, rule = %rule.id, "no identity issued: revoked");
                return Err(CallerError::Revoked(rule.id.clone()));
            }
            Err(NotEntitled::NoEntry) => {
                self.events.emit(Event::Refused {
                    rpc,
                    pid: Some(attestation.pid),
                    uid,
                    why: Refusal::NoEntry {
                        exe: attestation.exe.clone(),
                        selectors: selector_strings(&attestation.selectors),
                    },
                });
                tracing::debug!(%rpc, pid = attestation.pid, uid, "no identity issued: no entry matches");
                return Err(CallerError::NoIdentity);
            }
        };
        // Streams keep this for drift comparison; the per-attestor detail was reported already.
        let mut attestation = attestation;
        attestation.reports = Vec::new();
        Ok(Caller { attestation: self.shared.get(attestation), uid, entries, policy, attested_at: self.clock.now() })
    }

    /// [`Self::caller_reused`]'s full attestation, also returning the pinned process and a session baseline (see
    /// [`Self::attest_pinned`]).
    /// `serves`: whether an entry serves this call (the `attested` line of a caller none of whose
    /// entries does counts as a refusal in the audit log).
    async fn caller_pinned(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
        serves: &(dyn Fn(&Entry) -> bool + Sync),
        session: Option<std::time::SystemTime>,
    ) -> Result<(Caller, ProcessHandle, Option<session::Baseline>), CallerError> {
        let (attestation, handle, baseline, policy) = self.attest_settled(peer, rpc, session).await?;
        let entitled = entitlement(&attestation, &policy);
        let refused = !entitled.as_ref().is_ok_and(|entries| entries.iter().any(|e| serves(e)));
        self.events.emit(Event::Attested {
            rpc,
            pid: attestation.pid,
            uid: peer.uid,
            pinned_by_kernel: peer.pidfd_from_kernel,
            exe: attestation.exe.clone(),
            selectors: selector_strings(&attestation.selectors),
            failed_attestors: attestation
                .reports
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| (r.attestor.to_string(), e.to_string())))
                .collect(),
            refused,
        });
        self.conclude(attestation, peer, rpc, policy, entitled).map(|caller| (caller, handle, baseline))
    }

    /// A full attestation of the peer (never a session's reuse), with its `attested` line, for a
    /// service that keeps its own per-connection result (the gateway).
    pub(crate) async fn caller_full(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
        serves: &(dyn Fn(&Entry) -> bool + Sync),
    ) -> Result<Caller, CallerError> {
        self.caller_pinned(peer, rpc, serves, None).await.map(|(caller, ..)| caller)
    }

    /// The caller this connection's last full attestation found under `policy`, if it may be
    /// reused now (see [`session`]). A session past [`session::RENEW_AFTER`] is renewed by a
    /// full attestation in the background meanwhile (dropped if that one fails), so calls on a
    /// steadily used connection do not wait for one; its audit lines read "`rpc` (renewal)".
    pub(crate) fn reused(self: &Arc<Self>, peer: &PeerInfo, policy: &Arc<Policy>, rpc: Rpc) -> Option<Arc<Caller>> {
        let (caller, renew) = self.sessions.reuse(peer, policy)?;
        if let Some(generation) = renew {
            // Its audit lines say it is a renewal, not the call that started it (which was
            // served from the session).
            let (pipeline, peer, rpc) = (self.clone(), peer.clone(), rpc.renewal());
            tokio::spawn(async move {
                let renewed = pipeline.attest_and_keep(&peer, rpc, any_entry, Some(generation)).await;
                if !matches!(renewed, Ok((_, true))) {
                    pipeline.sessions.forget(&peer, generation);
                }
            });
        }
        Some(caller)
    }

    /// [`Self::caller`] for a call on a connection that may have been attested in full within
    /// [`session::MAX_REUSE`]: that caller after the per-call checks ([`Self::reused`]), else a
    /// full attestation (kept for the connection's next calls when it succeeds). Open streams
    /// re-attest in full.
    pub(crate) async fn caller_reused(self: &Arc<Self>, peer: &PeerInfo, rpc: Rpc) -> Result<Arc<Caller>, CallerError> {
        self.caller_reused_for(peer, rpc, any_entry).await
    }

    /// [`Self::caller_reused`] for a service that only some entries serve (see
    /// [`Self::caller_pinned`]).
    pub(crate) async fn caller_reused_for(
        self: &Arc<Self>,
        peer: &PeerInfo,
        rpc: Rpc,
        serves: Serves,
    ) -> Result<Arc<Caller>, CallerError> {
        match self.reused(peer, &self.policy(), rpc) {
            Some(caller) => Ok(caller),
            None => self.attest_and_keep(peer, rpc, serves, None).await.map(|(caller, _)| caller),
        }
    }

    /// A full attestation, kept as the connection's session when it succeeds and may be kept
    /// (replacing the session of generation `renewing` only if that is still the
    /// connection's); and whether it was kept.
    async fn attest_and_keep(
        &self,
        peer: &PeerInfo,
        rpc: Rpc,
        serves: Serves,
        renewing: Option<u64>,
    ) -> Result<(Arc<Caller>, bool), CallerError> {
        let started = (self.clock.monotonic(), self.clock.now());
        let (caller, process, baseline) = self.caller_pinned(peer, rpc, &serves, Some(started.1)).await?;
        let caller = Arc::new(caller);
        // Kept before the answer goes out, so the connection's next call finds it.
        // A caller none of whose entries serves this call keeps no session: its renewals would
        // write `attested` lines outside the refusal budget.
        let serving = caller.entries.iter().any(|e| serves(e));
        let kept = serving
            && baseline.is_some_and(|b| self.sessions.keep(peer, process, b, caller.clone(), started.0, renewing));
        Ok((caller, kept))
    }
}

/// Runs blocking work (/proc reads, hashing) off the async threads' run queues. On the
/// multi-threaded runtime it runs right here, in place: this worker's other tasks move to a new
/// worker thread, and the call neither waits for a blocking-pool thread to wake nor for its own
/// worker to wake again afterwards (those two hand-offs were a third of a full attestation's
/// latency). Elsewhere (a current-thread runtime, e.g. in tests) on the blocking pool.
async fn off_async<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CallerError> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        // A panic stays this call's error (refused and audited), as it was on the blocking pool.
        tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
                .map_err(|_| CallerError::AttestTask("attestation panicked".to_owned()))
        }
        _ => tokio::task::spawn_blocking(f).await.map_err(|e| CallerError::AttestTask(e.to_string())),
    }
}

/// One `Arc` per distinct attestation of a live process: an SDK opens several streams per
/// process (and the flood tests thousands), each of which holds its caller's attestation for drift
/// comparison; equal ones share one copy (their selectors are most of a stream's own memory).
#[derive(Default)]
struct Shared {
    held: std::sync::Mutex<SharedMap>,
}

#[derive(Default)]
struct SharedMap {
    by_process: HashMap<crate::peer::ProcessKey, std::sync::Weak<Attestation>>,
    /// Map size at which dead entries are swept next (amortised: twice the live count).
    sweep_at: usize,
}

impl Shared {
    /// `a`, or the equal attestation some caller already holds.
    fn get(&self, a: Attestation) -> Arc<Attestation> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = crate::peer::ProcessKey { pid: a.pid, start_ticks: a.starttime };
        if let Some(existing) = held.by_process.get(&key).and_then(std::sync::Weak::upgrade)
            && same(&existing, &a)
        {
            return existing;
        }
        let a = Arc::new(a);
        held.by_process.insert(key, Arc::downgrade(&a));
        if held.by_process.len() >= held.sweep_at {
            held.by_process.retain(|_, w| w.strong_count() > 0);
            held.sweep_at = (held.by_process.len() * 2).max(64);
        }
        a
    }
}

/// Equal in every field (the per-attestor reports are dropped before sharing). Destructured so
/// that a new field cannot be forgotten here.
fn same(a: &Attestation, b: &Attestation) -> bool {
    let Attestation { pid, starttime, selectors, reports, exe, watched_files } = a;
    *pid == b.pid
        && *starttime == b.starttime
        && *selectors == b.selectors
        && reports.is_empty()
        && b.reports.is_empty()
        && *exe == b.exe
        && *watched_files == b.watched_files
}

/// Whether an entry serves a call (see [`Pipeline::caller_reused_for`]).
pub(crate) type Serves = fn(&Entry) -> bool;

/// Every entry serves the Workload API.
pub(crate) fn any_entry(_: &Entry) -> bool {
    true
}

/// The entries a workload with this attestation gets under `policy`.
fn entitlement(attestation: &Attestation, policy: &Policy) -> Result<Vec<Arc<Entry>>, NotEntitled> {
    match policy.entitled(&attestation.selectors) {
        Ok(entries) if entries.is_empty() => Err(NotEntitled::NoEntry),
        other => other,
    }
}

pub(crate) fn selector_strings(s: &BTreeSet<Selector>) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}
