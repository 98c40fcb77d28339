//! The accept loop: admits connections under the per-uid and global limits and never spins.
//! When `accept` fails (EMFILE, ENFILE, ENOMEM) it backs off, and every refusal is logged at
//! most once per interval with a count, so a flood costs neither a core nor the disk.

use super::peer::{PeerStream, Refused};
use crate::limits::{Throttled, UidCounter};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

/// Connection limits and timeouts of the Workload API socket.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// A connection that has sent no complete request by then is closed.
    pub first_request_within: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max_connections: 8192, max_connections_per_uid: 1024, first_request_within: Duration::from_secs(5) }
    }
}

impl ConnectionLimits {
    /// Each connection holds two fds (socket, pidfd): keep the global cap under what the fd
    /// limit allows, with room for the CA, audit, inotify, attestation reads and the
    /// connections' remembered attestations (two fds each, see `caller::session`).
    pub fn fitted_to_fd_limit(mut self) -> Self {
        const RESERVED_FDS: u64 = 512 + 2 * crate::caller::session::MAX_SESSIONS as u64;
        let soft = raise_fd_limit();
        let fit = usize::try_from(soft.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX).max(16);
        if fit < self.max_connections {
            tracing::warn!(
                fd_limit = soft,
                "the fd limit allows {fit} Workload API connections, fewer than max_connections = {}",
                self.max_connections
            );
            self.max_connections = fit;
        }
        self.max_connections_per_uid = self.max_connections_per_uid.min(self.max_connections);
        self
    }
}

/// Raise the soft fd limit to the hard one; returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Accept connections until shutdown, handing admitted ones to the server.
pub fn spawn(
    listener: UnixListener,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<std::io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(64);
    let counter = UidCounter::new(limits.max_connections, limits.max_connections_per_uid);
    tokio::spawn(async move {
        const MIN_BACKOFF: Duration = Duration::from_millis(5);
        let mut backoff = MIN_BACKOFF;
        let mut accept_errors = Throttled::new(Duration::from_secs(5));
        let mut refusals = Throttled::new(Duration::from_secs(5));
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    backoff = MIN_BACKOFF;
                    match PeerStream::accept(stream, &counter, limits.first_request_within) {
                        Ok(peer) => {
                            if tx.send(Ok(peer)).await.is_err() {
                                return;
                            }
                        }
                        Err(refused) => {
                            if let Some(n) = refusals.tick() {
                                match &refused {
                                    Refused::OverLimit { uid, .. } => tracing::warn!(
                                        uid,
                                        refused_since_last_report = n,
                                        "connection refused: {refused}"
                                    ),
                                    Refused::Credentials(_) => {
                                        tracing::warn!(refused_since_last_report = n, "connection dropped: {refused}")
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: retrying at once would spin; wait for fds to free up.
                    if let Some(n) = accept_errors.tick() {
                        tracing::error!(error = %e, failures_since_last_report = n, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    });
    rx
}
