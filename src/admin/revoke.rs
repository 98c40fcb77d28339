//! Runtime revocations (`tessera revoke`): deny rules added and lifted over the admin socket,
//! persisted in `DATA_DIR/revocations.json` (atomic, 0600) so they survive a restart, and put
//! into force through the [`PolicyComposer`], which publishes the new [`Policy`] before the
//! answer: every open stream re-evaluates on that at once.
//!
//! Routes: `POST /revocations` (`{"selector"|"spiffe_id": …, "reason": …}`), `GET /revocations`,
//! `DELETE /revocations/ID`.

mod matched;

use crate::events::{Event, Events};
use crate::inventory::Inventory;
use crate::net::http::{self, Answer, Caller, Method, Request};
use crate::registry::PolicyComposer;
use crate::registry::deny::{DenyRule, DenyTarget, Origin};
use crate::spiffe_id::SpiffeId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tessera_attestors::Selector;

const FILE: &str = "revocations.json";
/// Runtime revocations kept at most (each is checked on every attestation).
const MAX_RULES: usize = 10_000;
const MAX_REASON_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StoreError {
    #[error("cannot read revocations {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "revocations file {path} is corrupt ({message}); refusing to start without the revocations it holds: \
         repair or remove it"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write revocations {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    revocations: Vec<DenyRule>,
}

/// The runtime rules and their file.
pub(crate) struct Revocations {
    path: PathBuf,
    rules: Mutex<Vec<Arc<DenyRule>>>,
}

impl Revocations {
    /// Load `DATA_DIR/revocations.json` (none yet: no rules). A corrupt file stops the daemon:
    /// starting without the revocations would silently hand identities back.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE);
        let rules = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StoreFile = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt { path: path.clone(), message: e.to_string() })?;
                if file.version != 1 {
                    return Err(StoreError::Corrupt { path, message: format!("unknown version {}", file.version) });
                }
                file.revocations.into_iter().map(Arc::new).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        Ok(Self { path, rules: Mutex::new(rules) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<DenyRule>>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn rules(&self) -> Vec<Arc<DenyRule>> {
        self.lock().clone()
    }

    /// Persist `next`, then put it in force.
    fn replace(
        &self,
        rules: &mut Vec<Arc<DenyRule>>,
        next: Vec<Arc<DenyRule>>,
        composer: &PolicyComposer,
    ) -> Result<(), StoreError> {
        let file = StoreFile { version: 1, revocations: next.iter().map(|r| (**r).clone()).collect() };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            crate::storage::private_dir(dir).map_err(|source| StoreError::Write { path: self.path.clone(), source })?;
        }
        crate::storage::write_atomic(&self.path, &bytes)
            .map_err(|source| StoreError::Write { path: self.path.clone(), source })?;
        *rules = next;
        // In force when this returns (the composer publishes synchronously): the admin answer
        // comes after open streams were woken and new fetches are refused.
        composer.revocations_changed(rules.clone());
        Ok(())
    }

    fn add(&self, rule: DenyRule, composer: &PolicyComposer) -> Result<Arc<DenyRule>, AddError> {
        let mut rules = self.lock();
        if let Some(existing) = rules.iter().find(|r| r.target == rule.target) {
            return Err(AddError::Exists(existing.clone()));
        }
        if rules.len() >= MAX_RULES {
            return Err(AddError::Full);
        }
        let rule = Arc::new(rule);
        let mut next = rules.clone();
        next.push(rule.clone());
        self.replace(&mut rules, next, composer).map_err(AddError::Store)?;
        Ok(rule)
    }

    fn lift(&self, id: &str, composer: &PolicyComposer) -> Result<Option<Arc<DenyRule>>, StoreError> {
        let mut rules = self.lock();
        let Some(found) = rules.iter().find(|r| r.id == id).cloned() else { return Ok(None) };
        let next = rules.iter().filter(|r| r.id != id).cloned().collect();
        self.replace(&mut rules, next, composer)?;
        Ok(Some(found))
    }
}

enum AddError {
    Exists(Arc<DenyRule>),
    Full,
    Store(StoreError),
}

/// The body of `POST /revocations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    selector: Option<String>,
    spiffe_id: Option<String>,
    reason: String,
}

fn bad(message: impl Into<String>) -> http::Response {
    http::json(Answer::BadRequest, &serde_json::json!({ "error": "bad_request", "message": message.into() }))
}

fn target_of(req: &RevokeRequest) -> Result<DenyTarget, Box<http::Response>> {
    match (&req.selector, &req.spiffe_id) {
        (Some(s), None) => s.parse::<Selector>().map(DenyTarget::Selector).map_err(|e| Box::new(bad(e.to_string()))),
        (None, Some(id)) => SpiffeId::parse_workload(id)
            .map(DenyTarget::SpiffeId)
            .map_err(|e| Box::new(bad(format!("invalid SPIFFE ID {id:?}: {e}")))),
        _ => Err(Box::new(bad("give exactly one of --selector or --spiffe-id"))),
    }
}

fn new_id(existing: &[Arc<DenyRule>]) -> String {
    use rand::Rng;
    loop {
        let id = format!("r-{:08x}", rand::rng().random::<u32>());
        if !existing.iter().any(|r| r.id == id) {
            return id;
        }
    }
}

fn caller_ids(caller: &Caller) -> (u32, Option<i32>) {
    match caller {
        Caller::Unix(p) => (p.uid, p.pid),
        // The admin socket is Unix-only; a TCP caller never gets this far (refused before).
        Caller::Tcp => (u32::MAX, None),
    }
}

/// Register the revocation routes on the admin socket.
pub(crate) fn routes(
    routes: &mut crate::net::http::Routes,
    store: Arc<Revocations>,
    policy: PolicyComposer,
    inventory: Arc<Inventory>,
    events: Events,
) {
    let (s, p, e) = (store.clone(), policy.clone(), events.clone());
    routes.add(Method::POST, "/revocations", move |request: Request| {
        let (store, policy, inventory, events) = (s.clone(), p.clone(), inventory.clone(), e.clone());
        async move {
            let req: RevokeRequest = match serde_json::from_slice(&request.body) {
                Ok(r) => r,
                Err(e) => return bad(format!("body: {e}")),
            };
            let target = match target_of(&req) {
                Ok(t) => t,
                Err(response) => return *response,
            };
            let reason = req.reason.trim().to_owned();
            if reason.is_empty() || reason.len() > MAX_REASON_LEN {
                return bad(format!("--reason must be 1 to {MAX_REASON_LEN} bytes"));
            }
            let (by_uid, by_pid) = caller_ids(&request.caller);
            // When it was recorded (shown, decides nothing): the system clock.
            let at = crate::clock::unix_secs(crate::clock::now());
            let rule =
                DenyRule { id: new_id(&store.rules()), target, reason, origin: Origin::Runtime { by_uid, by_pid, at } };
            // Blocking: an fsync'd write under the store's lock, then /proc reads.
            let outcome = tokio::task::spawn_blocking(move || {
                // Who holds what, taken before the rule is in force (streams are withdrawn at
                // once after); evaluated after, so hashing never delays the revocation.
                let current = policy.current();
                let (holders, _) = inventory.snapshot(0);
                let grants = inventory.grants();
                let added = store.add(rule, &policy)?;
                let matched = matched::matched_now(&added.target, &current, &holders, &grants);
                Ok::<_, AddError>((added, matched))
            })
            .await;
            match outcome {
                Ok(Ok((rule, matched_now))) => {
                    let message = matched::message(&rule, &matched_now);
                    tracing::warn!(rule = %rule.id, target = %rule.target, reason = %rule.reason, by_uid, ?by_pid, "revoked");
                    events.emit(Event::Revoked { rule: rule.clone(), by_uid, by_pid, matched_now: matched_now.clone() });
                    http::json(
                        Answer::Created,
                        &serde_json::json!({ "revocation": &*rule, "matched_now": matched_now, "message": message }),
                    )
                }
                Ok(Err(AddError::Exists(rule))) => http::json(
                    Answer::Conflict,
                    &serde_json::json!({ "error": "exists", "revocation": &*rule,
                        "message": format!("already revoked by {}", rule.id) }),
                ),
                Ok(Err(AddError::Full)) => http::json(
                    Answer::InsufficientStorage,
                    &serde_json::json!({ "error": "full", "message": format!("{MAX_RULES} revocations exist; lift some") }),
                ),
                Ok(Err(AddError::Store(e))) => server_error(e.to_string()),
                Err(e) => server_error(e.to_string()),
            }
        }
    });
    let p = policy.clone();
    routes.add(Method::GET, "/revocations", move |_request: Request| {
        let policy = p.current();
        async move {
            let rules: Vec<DenyRule> = policy.deny.rules().map(|r| (**r).clone()).collect();
            http::json(Answer::Ok, &serde_json::json!({ "revocations": rules }))
        }
    });
    routes.add(Method::DELETE, "/revocations/", move |request: Request| {
        let (store, policy, events) = (store.clone(), policy.clone(), events.clone());
        async move {
            let id = request.path().trim_start_matches("/revocations/").to_owned();
            if id.starts_with("config-") {
                return http::json(
                    Answer::Conflict,
                    &serde_json::json!({ "error": "in_config",
                        "message": format!("{id} is a [[deny]] block of the config file; remove it there and reload") }),
                );
            }
            let (by_uid, by_pid) = caller_ids(&request.caller);
            let lookup = id.clone();
            match tokio::task::spawn_blocking(move || store.lift(&lookup, &policy)).await {
                Ok(Ok(Some(rule))) => {
                    tracing::warn!(rule = %rule.id, by_uid, ?by_pid, "revocation lifted");
                    events.emit(Event::RevocationLifted { rule: rule.clone(), by_uid, by_pid });
                    http::json(
                        Answer::Ok,
                        &serde_json::json!({ "lifted": &*rule, "message": format!("revocation {id} lifted") }),
                    )
                }
                Ok(Ok(None)) => http::json(
                    Answer::NotFound,
                    &serde_json::json!({ "error": "not_found", "message": format!("no revocation {id}") }),
                ),
                Ok(Err(e)) => server_error(e.to_string()),
                Err(e) => server_error(e.to_string()),
            }
        }
    });
}

fn server_error(message: String) -> http::Response {
    http::json(Answer::Internal, &serde_json::json!({ "error": "internal", "message": message }))
}
