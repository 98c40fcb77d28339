//! HTTP on the token socket (`POST /token`, `GET /jwks`) and the approval commands on the admin
//! socket (`GET /approvals`, `POST /approvals/ID/approve`, `POST /approvals/ID/reject`).

use super::approvals::{Approval, ApprovalError, Approvals, Decider, State};
use super::exchange::Exchange;
use crate::caller::Pipeline;
use crate::events::delegation::{AgentEvidence, Outcome, Record};
use crate::events::{Call, Event, Events, Rpc};
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Caller, Method, Request, Response};
use std::sync::Arc;

/// The token socket's handler.
pub(crate) async fn token_socket(exchange: Arc<Exchange>, req: Request) -> Response {
    match (req.method.clone(), req.path()) {
        (Method::POST, "/token") => {
            let Caller::Unix(peer) = &req.caller else { return http::not_found() };
            let content_type = req.headers.get(::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let mut response = match exchange.run(peer, content_type, &req.body, req.truncated).await {
                Ok(issued) => http::json(Answer::Ok, &issued.body()),
                Err(e) => http::json(Answer::BadRequest, &e.body()),
            };
            // RFC 6749 §5.1: token responses are never cached.
            response.headers_mut().insert(::http::header::PRAGMA, ::http::HeaderValue::from_static("no-cache"));
            response
        }
        (Method::GET, "/jwks") => jwks(&*exchange.ca),
        (_, "/token" | "/jwks") => http::method_not_allowed(),
        _ => http::not_found(),
    }
}

/// The delegation keys' public JWKs (published before they sign, kept until they expire).
pub(crate) fn jwks(ca: &dyn KeySource) -> Response {
    let keys: Vec<_> = ca.authorities().delegation.iter().map(|k| super::trust::delegation_jwk(k)).collect();
    let mut r = http::json(Answer::Ok, &serde_json::json!({ "keys": keys }));
    r.headers_mut().insert(::http::header::CACHE_CONTROL, ::http::HeaderValue::from_static("max-age=60"));
    r
}

/// `GET /approvals` on the admin socket.
pub(crate) async fn list(approvals: Arc<Approvals>) -> Response {
    http::json(Answer::Ok, &serde_json::json!({ "approvals": approvals.list() }))
}

/// `POST /approvals/ID/approve|reject` on the admin socket (already authorized by it). The decider
/// must not be the agent that asked: not its uid (uid 0 aside), and not a process its entry
/// matches. The admin socket serves the daemon's uid and a group too, so an agent running as one
/// of those could otherwise approve its own request.
pub(crate) async fn decide(
    approvals: Arc<Approvals>,
    pipeline: Arc<Pipeline>,
    events: Events,
    req: Request,
) -> Response {
    let rest = req.path().strip_prefix("/approvals/").unwrap_or_default();
    let (id, approve) = match rest.rsplit_once('/') {
        Some((id, "approve")) => (id, true),
        Some((id, "reject")) => (id, false),
        _ => {
            return http::json(
                Answer::NotFound,
                &serde_json::json!({ "error": "use POST /approvals/ID/approve or /approvals/ID/reject" }),
            );
        }
    };
    let by = req.caller.uid().unwrap_or(u32::MAX);
    let decider = Decider::Uid(by);
    if let Some(a) = approvals.get(id)
        && let Err(why) = not_the_agent(&a, &req.caller, &pipeline).await
    {
        let mut rec = decision_record(&a, Outcome::Refused, &decider);
        rec.error = Some(("access_denied", why.clone()));
        rec.caller_uid = Some(by);
        events.emit(Event::Delegation(Box::new(rec)));
        tracing::warn!(approval = %a.approval_id, by, "approval decision refused: {why}");
        return http::json(Answer::Forbidden, &serde_json::json!({ "error": "permission_denied", "message": why }));
    }
    match approvals.decide(id, approve, &decider) {
        Ok(a) => {
            let rec = decision_record(&a, outcome_of(&a), &decider);
            events.emit(Event::Delegation(Box::new(rec)));
            tracing::info!(approval = %a.approval_id, by, approved = approve, "delegation approval decided");
            http::json(Answer::Ok, &a)
        }
        Err(e @ ApprovalError::NotFound(_)) => {
            http::json(Answer::NotFound, &serde_json::json!({ "error": "not_found", "message": e.to_string() }))
        }
        Err(e @ ApprovalError::NotYours(_)) => http::json(
            Answer::Forbidden,
            &serde_json::json!({ "error": "permission_denied", "message": e.to_string() }),
        ),
        Err(e) => http::json(Answer::Conflict, &serde_json::json!({ "error": "conflict", "message": e.to_string() })),
    }
}

/// The audit outcome of a decision just made.
pub(super) fn outcome_of(a: &Approval) -> Outcome {
    if a.state == State::Approved { Outcome::Approved } else { Outcome::Rejected }
}

/// The audit record of a decision on `a` by `by` (`outcome`: approved, rejected, or refused).
pub(super) fn decision_record(a: &Approval, outcome: Outcome, by: &Decider) -> Record {
    let mut rec = Record::new(
        outcome,
        AgentEvidence {
            pid: a.agent_pid,
            uid: Some(a.agent_uid),
            spiffe_id: Some(a.agent.clone()),
            ..AgentEvidence::default()
        },
    );
    rec.user = Some(a.user.clone());
    rec.scopes_requested = a.scope.clone();
    rec.audience = Some(a.audience.clone());
    rec.approval_id = Some(a.approval_id.clone());
    rec.authorization_details = a.authorization_details.clone();
    rec.approver_uid = by.uid();
    rec.approver = Some(by.name());
    rec.approved_at = (outcome == Outcome::Approved).then_some(a.decided_at).flatten();
    rec.remote_decider = matches!(by, Decider::User { .. });
    rec
}

/// Err (why) when the deciding caller is the agent whose request it is: the same uid (root
/// aside: root is every agent's operator), or a process that the agent's entry matches. A
/// decider that cannot be attested is refused too (fail closed).
async fn not_the_agent(a: &Approval, caller: &Caller, pipeline: &Pipeline) -> Result<(), String> {
    let Caller::Unix(peer) = caller else { return Err("the decider is not a local process".into()) };
    if peer.uid != 0 && peer.uid == a.agent_uid {
        return Err(format!(
            "uid {} asked for this approval; the same uid may not decide it (separation of duties)",
            a.agent_uid
        ));
    }
    let policy = pipeline.policy();
    let attestation = pipeline
        .attest(peer, RPC_DECIDE, &policy)
        .await
        .map_err(|e| format!("the deciding process could not be attested: {e}"))?;
    let is_agent = policy.registry.matching(&attestation.selectors).iter().any(|e| e.spiffe_id.to_string() == a.agent);
    if is_agent {
        return Err(format!("the deciding process matches the entry of {}, the agent that asked", a.agent));
    }
    Ok(())
}

/// The audit `rpc` of an approval decider's attestation.
const RPC_DECIDE: Rpc = Rpc::of(Call::ApprovalDecision);
