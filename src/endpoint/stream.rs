//! The stream engine: an entitlement stream carries the full state in every message and is
//! re-evaluated on rotation, policy reload, a change of a file its attestation read, and the
//! re-attestation interval. A message is sent first at once, then only when the entitlement
//! changed or a refresh came due. A workload that stops matching every entry is withdrawn
//! (PermissionDenied) and its stream ends; drift (changed selectors) is an event.

use super::context::Context;
use super::status::ApiError;
use crate::bundle::FederatedBundle;
use crate::caller::{Caller, CallerError};
use crate::events::{Event, Rpc};
use crate::issuer::Bundles;
use crate::peer::PeerInfo;
use crate::spiffe_id::TrustDomain;
use crate::watch::Owner;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use tessera_attestors::Attestation;
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::Status;

/// What a caller is entitled to on a stream; equal states need no new message.
pub(crate) struct Entitlement {
    pub caller: Caller,
    /// The local bundles it was computed with; a rotation replaces them (a new `Arc`).
    pub bundles: Arc<Bundles>,
    pub federated: BTreeMap<TrustDomain, Arc<FederatedBundle>>,
}

impl PartialEq for Entitlement {
    fn eq(&self, other: &Self) -> bool {
        self.caller.entries == other.caller.entries
            && Arc::ptr_eq(&self.bundles, &other.bundles)
            // A new policy set may decide the same entries differently: render again.
            && match (&self.caller.policy.authz, &other.caller.policy.authz) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.federated == other.federated
    }
}

impl Entitlement {
    pub(crate) fn of(ctx: &Context, caller: Caller) -> Self {
        let federated = caller.policy.federated_for(&caller.entries);
        Entitlement { caller, bundles: ctx.issuer.bundles(), federated }
    }
}

/// A message for the stream and, for SVIDs, when to renew.
pub(crate) type Rendered<T> = Result<(T, Option<SystemTime>), ApiError>;

/// The stream a client reads: the loop below, polled by the HTTP/2 stream's own task.
pub(crate) type EntitlementStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Drive a stream from `initial`; `render` turns an entitlement into a message (it may sign).
///
/// No task or channel of its own: the HTTP/2 layer already runs one task per stream, and polls
/// this one in it (a spawned task plus a channel cost about half of an idle stream's memory).
/// The client going away drops the stream, and with it its file subscription.
pub(crate) fn open<T, R>(
    ctx: Arc<Context>,
    peer: PeerInfo,
    rpc: Rpc,
    initial: Entitlement,
    render: R,
) -> EntitlementStream<T>
where
    T: Send + 'static,
    R: Fn(&Context, &Entitlement) -> Rendered<T> + Send + Sync + 'static,
{
    let ctx_reattest = ctx.reattest_interval;
    let mut wake = ctx.stream_wake.clone();
    wake.mark_unchanged();
    let files_changed = Arc::new(tokio::sync::Notify::new());
    // Held for the stream's life: dropping it removes watches nobody else needs.
    let files_sub =
        ctx.files.subscribe(Owner::Uid(peer.uid), &initial.caller.attestation.watched_files, &files_changed);
    let now = Instant::now();
    let exe_check_at = after(now, EXE_CHECK_EVERY);
    let driver = Driver {
        // Counted open until the stream is dropped, whichever way it ends.
        _open: OpenStream::new(&ctx),
        ctx,
        peer,
        rpc,
        render,
        state: initial,
        wake,
        files_changed,
        _files_sub: files_sub,
        must_send: true,
        ended: false,
        refresh_at: None,
        reattest_at: after(now, ctx_reattest),
        exe_check_at,
        timer: Box::pin(tokio::time::sleep_until(exe_check_at)),
    };
    Box::pin(futures_util::stream::unfold(driver, |mut d| async move {
        let item = d.next().await?;
        Some((item, d))
    }))
}

/// One open stream's state between messages.
struct Driver<R> {
    _open: OpenStream,
    ctx: Arc<Context>,
    peer: PeerInfo,
    rpc: Rpc,
    render: R,
    state: Entitlement,
    /// Policy reloads, CA rotations and shutdown, as one signal (see [`wakeups`]).
    wake: tokio::sync::watch::Receiver<u64>,
    files_changed: Arc<tokio::sync::Notify>,
    _files_sub: Option<crate::watch::Subscription>,
    must_send: bool,
    /// An error was the last message: the stream ends.
    ended: bool,
    refresh_at: Option<SystemTime>,
    /// The next re-attestation at the latest (drift detection).
    reattest_at: Instant,
    /// An exec must end the stream within a second, not at the next re-attestation: a cheap
    /// check of the executable identity taken at accept (two stats through the pinned pid).
    exe_check_at: Instant,
    /// One timer for both deadlines (each idle stream holds it).
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<R> Driver<R> {
    /// The next message: at once for the first, then when the entitlement changed or a refresh
    /// came due; an error ends the stream; `None` when it is over.
    async fn next<T>(&mut self) -> Option<Result<T, Status>>
    where
        R: Fn(&Context, &Entitlement) -> Rendered<T>,
    {
        if self.ended {
            return None;
        }
        let ctx = self.ctx.clone();
        let rpc = self.rpc;
        loop {
            if self.must_send {
                self.must_send = false;
                return match (self.render)(&ctx, &self.state) {
                    Ok((msg, refresh)) => {
                        self.refresh_at = refresh;
                        Some(Ok(msg))
                    }
                    Err(e) => {
                        self.ended = true;
                        Some(Err(Status::from(&e)))
                    }
                };
            }
            // Re-attest at the interval, or sooner when the SVID is due for renewal.
            let now = Instant::now();
            let refresh_in = self.refresh_at.map(|t| t.duration_since(ctx.pipeline.clock.now()).unwrap_or_default());
            let reattest_at = refresh_in.map_or(self.reattest_at, |d| self.reattest_at.min(after(now, d)));
            self.timer.as_mut().reset(reattest_at.min(self.exe_check_at));
            tokio::select! {
                () = self.timer.as_mut() => {
                    let now = Instant::now();
                    if now < reattest_at {
                        // Only the exec check was due.
                        self.exe_check_at = after(now, EXE_CHECK_EVERY);
                        if same_executable(&self.peer) {
                            continue;
                        }
                    }
                }
                r = self.wake.changed() => if r.is_err() || *ctx.shutdown.borrow() { return None },
                () = self.files_changed.notified() => {}
            }
            let now = Instant::now();
            self.reattest_at = after(now, ctx.reattest_interval);
            self.exe_check_at = after(now, EXE_CHECK_EVERY);
            // Boxed: the attestation future is large and runs rarely; inline, every idle stream
            // would carry its size. Judged by the policy in force when it ended.
            let next = match Box::pin(ctx.pipeline.attest_current(&self.peer, rpc)).await {
                Ok((attestation, snapshot)) => {
                    drift(&ctx, rpc, &self.state, &attestation);
                    if attestation.watched_files != self.state.caller.attestation.watched_files {
                        self._files_sub = ctx.files.subscribe(
                            Owner::Uid(self.peer.uid),
                            &attestation.watched_files,
                            &self.files_changed,
                        );
                    }
                    ctx.pipeline
                        .entitle(attestation, &self.peer, rpc, snapshot)
                        .map(|caller| Entitlement::of(&ctx, caller))
                }
                Err(e) => Err(e),
            };
            match next {
                Ok(next) => {
                    let due = self.refresh_at.is_some_and(|t| t <= ctx.pipeline.clock.now());
                    self.must_send = due || next != self.state;
                    self.state = next;
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    let status = Status::from(&e);
                    // No entry matches any more, or the process is no longer what connected
                    // (an exec): either way the identity it held is taken back.
                    use tessera_attestors::AttestError as A;
                    let changed = match &e {
                        ApiError::Caller(CallerError::Attestation(a)) => Some(a),
                        _ => None,
                    };
                    // A setuid exec fails the credentials check before the executable's: an exec
                    // all the same.
                    let exec = match changed {
                        Some(A::ExecutableChanged { .. }) => true,
                        Some(A::CredentialsChanged { .. }) => !same_executable(&self.peer),
                        _ => false,
                    };
                    if exec {
                        exec_drift(&ctx, rpc, &self.state, &self.peer);
                    }
                    let withdrawn = matches!(
                        e,
                        ApiError::Caller(CallerError::NoIdentity) | ApiError::Caller(CallerError::Revoked(_))
                    ) || matches!(
                        changed,
                        Some(
                            A::ExecutableChanged { .. }
                                | A::CredentialsChanged { .. }
                                | A::MountNamespaceChanged { .. }
                        )
                    );
                    if withdrawn {
                        ctx.pipeline.events.emit(Event::Withdrawn {
                            rpc,
                            pid: self.state.caller.attestation.pid,
                            uid: self.state.caller.uid,
                            had: self.state.caller.entries.iter().map(|e| e.spiffe_id.clone()).collect(),
                            reason: status.message().to_owned(),
                            owners: crate::events::owners_of(&self.state.caller.entries),
                        });
                    }
                    tracing::info!(%rpc, pid = ?self.peer.pid, code = ?status.code(), "stream ended: {}", status.message());
                    self.ended = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

/// What every open stream re-evaluates on, as one signal: a policy reload, a CA rotation (the
/// generation), shutdown (the stream then ends). One receiver and one pending future per idle
/// stream instead of three; closed (streams end) when any source is gone.
pub(crate) fn wakeups(
    mut policy: tokio::sync::watch::Receiver<Arc<crate::registry::Policy>>,
    mut ca_gen: tokio::sync::watch::Receiver<u64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let open = tokio::select! {
                r = policy.changed() => r.is_ok(),
                r = ca_gen.changed() => r.is_ok(),
                r = shutdown.changed() => r.is_ok() && !*shutdown.borrow(),
            };
            if !open {
                // Dropping `tx` ends every stream waiting on it.
                return;
            }
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    });
    rx
}

/// An open stream, as events: `StreamOpened` now, `StreamClosed` when dropped. Holds the
/// pipeline (a pointer), not a copy of its subscriber list (an allocation per stream).
struct OpenStream {
    pipeline: Arc<crate::caller::Pipeline>,
}

impl OpenStream {
    fn new(ctx: &Context) -> Self {
        ctx.pipeline.events.emit(Event::StreamOpened);
        Self { pipeline: ctx.pipeline.clone() }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.pipeline.events.emit(Event::StreamClosed);
    }
}

/// How often an open stream checks that its process still runs the executable it connected with.
const EXE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `now + d`, saturating far in the future.
fn after(now: Instant, d: std::time::Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400))
}

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

/// Report an exec on an open stream as drift: the executable's selectors go; the new
/// executable's path (as `/proc/PID/exe` shows it now) is named, its digest not computed.
fn exec_drift(ctx: &Context, rpc: Rpc, old: &Entitlement, peer: &PeerInfo) {
    let before = old.caller.attestation.exe.clone();
    let after_path = match (peer.pid, peer.pidfd.as_deref()) {
        (Some(pid), Some(pidfd)) => tessera_attestors::current_exe_path(pid, pidfd),
        _ => None,
    };
    let after = crate::events::ExeEvidence { path: after_path.map(|p| p.display().to_string()), sha256: None };
    let removed: Vec<String> = old
        .caller
        .attestation
        .selectors
        .iter()
        .filter(|s| {
            s.kind() == tessera_attestors::Kind::Unix && ["path:", "sha256:"].iter().any(|p| s.value().starts_with(p))
        })
        .map(|s| s.to_string())
        .collect();
    // Nothing of the new executable is attested (the connection is refused outright), so no
    // selectors are added; its path is evidence only.
    let added = Vec::new();
    tracing::info!(%rpc, pid = ?peer.pid, before = ?before.path, after = ?after.path, "workload exec'd on an open stream");
    ctx.pipeline.events.emit(Event::Drift {
        rpc,
        pid: old.caller.attestation.pid,
        uid: old.caller.uid,
        removed,
        added,
        entries_before: old.caller.entries.iter().map(|e| e.spiffe_id.clone()).collect(),
        owners: crate::events::owners_of(&old.caller.entries),
        exec: Some(Box::new((before, after))),
    });
}

/// Report a change in what a streaming workload looks like (new binary, edited script or
/// prompt, changed cgroup), with the old and new selectors that differ.
fn drift(ctx: &Context, rpc: Rpc, old: &Entitlement, new: &Attestation) {
    let (a, b) = (&old.caller.attestation.selectors, &new.selectors);
    if a == b {
        return;
    }
    let removed: Vec<String> = a.difference(b).map(|s| s.to_string()).collect();
    let added: Vec<String> = b.difference(a).map(|s| s.to_string()).collect();
    tracing::info!(%rpc, pid = new.pid, ?removed, ?added, "workload drifted");
    ctx.pipeline.events.emit(Event::Drift {
        rpc,
        pid: new.pid,
        uid: old.caller.uid,
        removed,
        added,
        entries_before: old.caller.entries.iter().map(|e| e.spiffe_id.clone()).collect(),
        owners: crate::events::owners_of(&old.caller.entries),
        exec: None,
    });
}
