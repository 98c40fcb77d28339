//! The admin socket: privileged commands (inventory, revocation, approvals, metrics) over HTTP/1.1
//! on a Unix socket of its own. Mode 0600 (0660 with `admin_socket_group`), and, because file modes
//! can be loosened by mistake, every request is checked against the caller's peer credentials:
//! only uid 0, the daemon's uid or a member of the configured group is served.

pub(crate) mod revoke;

use crate::events::{Event, Events};
use crate::net::http::{self, Answer, Caller, Handler, Request, Routes};
use std::path::Path;

/// Who may use the admin socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized {
    pub daemon_uid: u32,
    pub group: Option<u32>,
}

impl Authorized {
    /// Allowed: uid 0, the daemon's uid, or the configured group as primary or supplementary
    /// group of the calling process (read through its pidfd). Unknown groups (process gone,
    /// exec'd or changed credentials since it connected) fail closed.
    pub(crate) fn allows(&self, caller: &Caller) -> bool {
        let Caller::Unix(peer) = caller else { return false };
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return true;
        }
        let Some(group) = self.group else { return false };
        if peer.gid == group {
            return true;
        }
        // Through the connection's pidfd, with a liveness check after the read: once the caller
        // is gone, a later owner of its pid must not answer for it.
        tessera_attestors::ProcessHandle::from_peer(peer.credentials())
            .and_then(|process| process.groups())
            .is_ok_and(|groups| groups.contains(&group))
    }
}

/// The admin socket's handler: authorize, audit a refusal, dispatch.
pub(crate) struct AdminHandler {
    pub authorized: Authorized,
    pub routes: Routes,
    pub events: Events,
}

impl Handler for AdminHandler {
    fn handle(&self, request: Request) -> http::BoxFuture {
        if !self.authorized.allows(&request.caller) {
            let (uid, pid) = match &request.caller {
                Caller::Unix(p) => (Some(p.uid), p.pid),
                Caller::Tcp => (None, None),
            };
            // Debug only (any local user may call it at will): the audit line, under the uid's
            // refusal budget, is the record.
            tracing::debug!(?uid, ?pid, path = request.path(), "admin socket: caller refused");
            self.events.emit(Event::AdminRefused {
                uid,
                pid,
                method: request.method.to_string(),
                path: request.path().chars().take(256).collect(),
            });
            return Box::pin(async {
                http::json(
                    Answer::Forbidden,
                    &serde_json::json!({
                        "error": "permission_denied",
                        "message": "the admin socket serves only root, the daemon's user and admin_socket_group",
                    }),
                )
            });
        }
        match self.routes.find(&request.method, request.path()) {
            Ok(route) => route.handle(request),
            Err(answer) => Box::pin(async move {
                http::json(answer, &serde_json::json!({ "error": answer.status().canonical_reason() }))
            }),
        }
    }
}

/// Bind the admin socket: 0600, or 0660 owned by `group`.
pub(crate) fn bind(
    path: &Path,
    group: Option<u32>,
) -> Result<tokio::net::UnixListener, crate::net::listener::EndpointError> {
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    let listener = crate::net::listener::bind(path, mode)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|source| crate::net::listener::EndpointError::Io { path: path.to_owned(), source })?;
    }
    Ok(listener)
}

/// The admin socket a CLI command talks to: `--admin-socket`, else `TESSERA_ADMIN_SOCKET`, else
/// `admin_socket_path` of `--config`, else the default.
pub(crate) fn socket_for_cli(
    flag: Option<&Path>,
    config: Option<&Path>,
) -> Result<std::path::PathBuf, crate::config::ConfigError> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("TESSERA_ADMIN_SOCKET").filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    if let Some(c) = config {
        return Ok(crate::config::Config::load(c)?.admin_socket_path);
    }
    Ok(crate::config::DEFAULT_ADMIN_SOCKET.into())
}
