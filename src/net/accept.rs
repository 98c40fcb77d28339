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
pub(crate) struct ConnectionLimits {
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
    /// Raise the soft fd limit to the hard one and fit the caps to it ([`Self::fitted`]); logs the
    /// caps in force.
    pub(crate) fn fitted_to_fd_limit(self) -> Self {
        let fd_limit = raise_fd_limit();
        let fitted = self.fitted(fd_limit);
        if fitted.max_connections < self.max_connections {
            tracing::warn!(
                fd_limit,
                "the fd limit allows {} Workload API connections, fewer than max_connections = {}",
                fitted.max_connections,
                self.max_connections
            );
        }
        tracing::info!(
            fd_limit,
            max_connections = fitted.max_connections,
            max_connections_per_uid = fitted.max_connections_per_uid,
            "Workload API connection limits"
        );
        fitted
    }

    /// The caps under `fd_limit`. Each connection holds two fds (socket, pidfd): the global cap
    /// stays under what the fd limit allows, with room for the CA, audit, inotify, attestation
    /// reads and the connections' remembered attestations (two fds each, see `caller::session`).
    /// One uid gets at most a quarter of the global cap: a low fd limit shrinks the global cap
    /// below the configured per-uid one, and one uid must not then take every slot.
    pub(crate) fn fitted(mut self, fd_limit: u64) -> Self {
        const RESERVED_FDS: u64 = 512 + 2 * crate::caller::session::MAX_SESSIONS as u64;
        let fit = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX).max(16);
        self.max_connections = self.max_connections.min(fit);
        self.max_connections_per_uid = self.max_connections_per_uid.min((self.max_connections / 4).max(1));
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
pub(crate) fn spawn(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_fd_limit_shrinks_the_per_uid_cap_with_the_global_one() {
        let defaults = ConnectionLimits::default();
        // A high limit keeps the configured caps.
        let f = defaults.fitted(1 << 20);
        assert_eq!((f.max_connections, f.max_connections_per_uid), (8192, 1024));
        // A hard limit of 1024: 128 connections fit, and one uid may hold a quarter of them.
        let f = defaults.fitted(1024);
        assert_eq!((f.max_connections, f.max_connections_per_uid), (128, 32));
        // 4096: 1664 fit; a quarter (416) is below the configured 1024.
        let f = defaults.fitted(4096);
        assert_eq!((f.max_connections, f.max_connections_per_uid), (1664, 416));
        // Absurdly low: the floor of 16 connections, 4 per uid; never 0.
        let f = defaults.fitted(0);
        assert_eq!((f.max_connections, f.max_connections_per_uid), (16, 4));
        let tiny = ConnectionLimits { max_connections: 2, ..defaults }.fitted(1 << 20);
        assert_eq!((tiny.max_connections, tiny.max_connections_per_uid), (2, 1));
        // A configured per-uid cap below the quarter stays.
        let small = ConnectionLimits { max_connections_per_uid: 8, ..defaults }.fitted(1024);
        assert_eq!(small.max_connections_per_uid, 8);
    }
}
