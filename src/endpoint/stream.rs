//! The stream engine: an entitlement stream carries the full state in every message and is
//! re-evaluated on rotation, policy reload, a change of a file its attestation read, and the
//! re-attestation interval. A message is sent first at once, then only when the entitlement
//! changed or a refresh came due. A workload that stops matching every entry is withdrawn
//! (PermissionDenied) and its stream ends; drift (changed selectors) is an event.

use super::status::ApiError;
use super::workload_api::Context;
use crate::bundle::FederatedBundle;
use crate::caller::{Caller, CallerError};
use crate::events::Event;
use crate::issuer::Bundles;
use crate::peer::PeerInfo;
use crate::spiffe_id::TrustDomain;
use crate::watch::Owner;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use tessera_attestors::Attestation;
use tokio::sync::mpsc;
use tonic::Status;

/// What a caller is entitled to on a stream; equal states need no new message.
pub struct Entitlement {
    pub caller: Caller,
    /// The local bundles it was computed with; a rotation replaces them (a new `Arc`).
    pub bundles: Arc<Bundles>,
    pub federated: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
}

impl PartialEq for Entitlement {
    fn eq(&self, other: &Self) -> bool {
        self.caller.entries == other.caller.entries
            && Arc::ptr_eq(&self.bundles, &other.bundles)
            && self.federated == other.federated
    }
}

impl Entitlement {
    pub fn of(ctx: &Context, caller: Caller) -> Self {
        let federated = caller.policy.federated_for(&caller.entries);
        Entitlement { caller, bundles: ctx.issuer.bundles(), federated }
    }
}

/// A message for the stream and, for SVIDs, when to renew.
pub type Rendered<T> = Result<(T, Option<SystemTime>), ApiError>;

/// Drive a stream from `initial`; `render` turns an entitlement into a message (it may sign).
pub fn spawn<T, R>(
    ctx: Arc<Context>,
    peer: PeerInfo,
    rpc: &'static str,
    initial: Entitlement,
    render: R,
) -> mpsc::Receiver<Result<T, Status>>
where
    T: Send + 'static,
    R: Fn(&Context, &Entitlement) -> Rendered<T> + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        // Counted open until this task ends, whichever way it ends.
        let _open = OpenStream::new(&ctx, rpc);
        let mut policy = ctx.pipeline.policy.clone();
        let mut ca_gen = ctx.issuer.changes();
        let mut shutdown = ctx.shutdown.clone();
        policy.mark_unchanged();
        ca_gen.mark_unchanged();
        let files_changed = Arc::new(tokio::sync::Notify::new());
        let mut state = initial;
        // Held for the stream's life: dropping it removes watches nobody else needs.
        let mut _files_sub =
            ctx.files.subscribe(Owner::Uid(peer.uid), &state.caller.attestation.watched_files, &files_changed);
        let mut must_send = true;
        let mut refresh_at: Option<SystemTime> = None;
        // An exec must end the stream within a second, not at the next re-attestation: a cheap
        // check of the executable identity taken at accept (two stats through the pinned pid).
        let mut exe_check = tokio::time::interval_at(tokio::time::Instant::now() + EXE_CHECK_EVERY, EXE_CHECK_EVERY);
        exe_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if must_send {
                match render(&ctx, &state) {
                    Ok((msg, refresh)) => {
                        refresh_at = refresh;
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(&e))).await;
                        return;
                    }
                }
            }
            let sleep_for = refresh_at
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(ctx.reattest_interval)
                .min(ctx.reattest_interval);
            tokio::select! {
                _ = tokio::time::sleep(sleep_for) => {}
                r = policy.changed() => if r.is_err() { return },
                r = ca_gen.changed() => if r.is_err() { return },
                _ = files_changed.notified() => {}
                _ = exe_check.tick() => if same_executable(&peer) {
                    must_send = false;
                    continue;
                },
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
            let snapshot = ctx.pipeline.policy();
            let next = match ctx.pipeline.attest(&peer, rpc, &snapshot).await {
                Ok(attestation) => {
                    drift(&ctx, rpc, &state, &attestation);
                    if attestation.watched_files != state.caller.attestation.watched_files {
                        _files_sub =
                            ctx.files.subscribe(Owner::Uid(peer.uid), &attestation.watched_files, &files_changed);
                    }
                    ctx.pipeline.entitle(attestation, &peer, rpc, snapshot).map(|caller| Entitlement::of(&ctx, caller))
                }
                Err(e) => Err(e),
            };
            match next {
                Ok(next) => {
                    let due = refresh_at.is_some_and(|t| t <= SystemTime::now());
                    must_send = due || next != state;
                    state = next;
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    let status = Status::from(&e);
                    // No entry matches any more, or the process is no longer what connected
                    // (an exec): either way the identity it held is taken back.
                    let withdrawn = matches!(
                        e,
                        ApiError::Caller(CallerError::NoIdentity)
                            | ApiError::Caller(CallerError::Revoked(_))
                            | ApiError::Caller(CallerError::Attestation(
                                tessera_attestors::AttestError::ExecutableChanged { .. }
                            ))
                    );
                    if withdrawn {
                        ctx.pipeline.events.emit(Event::Withdrawn {
                            rpc: rpc.to_owned(),
                            pid: state.caller.attestation.pid,
                            uid: state.caller.uid,
                            had: state.caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect(),
                            reason: status.message().to_owned(),
                            owners: crate::events::owners_of(&state.caller.entries),
                        });
                    }
                    tracing::info!(rpc, pid = ?peer.pid, code = ?status.code(), "stream ended: {}", status.message());
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// An open stream, as events: `StreamOpened` now, `StreamClosed` when dropped.
struct OpenStream {
    events: crate::events::Events,
    rpc: &'static str,
}

impl OpenStream {
    fn new(ctx: &Context, rpc: &'static str) -> Self {
        ctx.pipeline.events.emit(Event::StreamOpened { rpc: rpc.to_owned() });
        Self { events: ctx.pipeline.events.clone(), rpc }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.events.emit(Event::StreamClosed { rpc: self.rpc.to_owned() });
    }
}

/// How often an open stream checks that its process still runs the executable it connected with.
const EXE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The peer still runs the executable it had at accept (true when that cannot be checked
/// cheaply; the full re-attestation then decides).
fn same_executable(peer: &PeerInfo) -> bool {
    match (peer.pid, peer.pidfd.as_deref(), peer.exe) {
        (Some(pid), Some(pidfd), Some(expected)) => {
            tessera_attestors::verify_exe_identity(pid, pidfd, expected).is_ok()
        }
        _ => true,
    }
}

/// Report a change in what a streaming workload looks like (new binary, edited script or
/// prompt, changed cgroup), with the old and new selectors that differ.
fn drift(ctx: &Context, rpc: &str, old: &Entitlement, new: &Attestation) {
    let (a, b) = (&old.caller.attestation.selectors, &new.selectors);
    if a == b {
        return;
    }
    let removed: Vec<String> = a.difference(b).map(|s| s.to_string()).collect();
    let added: Vec<String> = b.difference(a).map(|s| s.to_string()).collect();
    tracing::info!(rpc, pid = new.pid, ?removed, ?added, "workload drifted");
    ctx.pipeline.events.emit(Event::Drift {
        rpc: rpc.to_owned(),
        pid: new.pid,
        uid: old.caller.uid,
        removed,
        added,
        entries_before: old.caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect(),
        owners: crate::events::owners_of(&old.caller.entries),
    });
}
