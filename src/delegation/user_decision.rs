//! `[approvals] listen`: the user decides their own pending approval, with their own token.
//! `POST /approvals/ID/approve` or `/approvals/ID/reject` with `Authorization: Bearer <token>`:
//! the token must verify as a subject token from a trusted `[[delegation.issuers]]` identity
//! provider (its `aud` the one configured for tessera; never a tessera-issued delegated token),
//! and its `sub` must be the approval's user (and, for a first-hop request, its issuer the
//! request's). The agent's own subject token is refused: the agent holds it. Answers are
//! OAuth-style JSON (`error`, `error_description`): 401 `invalid_token` (no or a bad token), 403
//! `access_denied` (another user's approval), 404 `not_found` (unknown, expired or used), 409
//! `already_decided` (a replay). Every decision, and every refused one on a live approval, is an
//! audit line (`approver`: the user's `sub`).

use super::approvals::{ApprovalError, Approvals, Decider};
use super::endpoint::{decision_record, outcome_of};
use super::request::OAuthCode;
use super::trust::{self, Origin, TesseraKeys};
use crate::caller::Pipeline;
use crate::events::delegation::Outcome;
use crate::events::{Event, Events};
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Method, Request, Response};
use std::sync::Arc;

/// What the decision listener needs.
pub(crate) struct UserDecisions {
    pub approvals: Arc<Approvals>,
    pub pipeline: Arc<Pipeline>,
    pub ca: Arc<dyn KeySource>,
    pub events: Events,
}

fn error(answer: Answer, code: &str, description: impl Into<String>) -> Response {
    let mut r = http::json(answer, &serde_json::json!({ "error": code, "error_description": description.into() }));
    if answer == Answer::Unauthorized
        && let Ok(v) = ::http::HeaderValue::from_str(&format!("Bearer error=\"{code}\""))
    {
        r.headers_mut().insert(::http::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The bearer token of `Authorization: Bearer …` (scheme case-insensitive).
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers.get(::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl UserDecisions {
    /// The listener's handler.
    pub(crate) async fn handle(self: Arc<Self>, req: Request) -> Response {
        let Some(rest) = req.path().strip_prefix("/approvals/") else {
            return error(Answer::NotFound, "not_found", "use POST /approvals/ID/approve or /approvals/ID/reject");
        };
        let (id, approve) = match rest.rsplit_once('/') {
            Some((id, "approve")) if !id.is_empty() && !id.contains('/') => (id, true),
            Some((id, "reject")) if !id.is_empty() && !id.contains('/') => (id, false),
            _ => return error(Answer::NotFound, "not_found", "use POST /approvals/ID/approve or /approvals/ID/reject"),
        };
        if req.method != Method::POST {
            return error(Answer::MethodNotAllowed, "invalid_request", "use POST");
        }
        let Some(token) = bearer(&req) else {
            return error(
                Answer::Unauthorized,
                OAuthCode::InvalidToken.as_str(),
                "send Authorization: Bearer <your token>",
            );
        };
        let decider = match self.verify(token) {
            Ok(d) => d,
            Err(why) => {
                self.refused(id, None, OAuthCode::InvalidToken.as_str(), &why);
                return error(Answer::Unauthorized, OAuthCode::InvalidToken.as_str(), why);
            }
        };
        match self.approvals.decide(id, approve, &decider) {
            Ok(a) => {
                self.events.emit(Event::Delegation(Box::new(decision_record(&a, outcome_of(&a), &decider))));
                tracing::info!(approval = %a.approval_id, approver = %decider.name(), approved = approve, "delegation approval decided by its user");
                http::json(Answer::Ok, &a)
            }
            Err(e @ ApprovalError::NotYours(_)) => {
                self.refused(id, Some(&decider), OAuthCode::AccessDenied.as_str(), &e.to_string());
                error(Answer::Forbidden, OAuthCode::AccessDenied.as_str(), e.to_string())
            }
            Err(e @ ApprovalError::Decided(_)) => error(Answer::Conflict, "already_decided", e.to_string()),
            Err(e) => error(Answer::NotFound, "not_found", e.to_string()),
        }
    }

    /// The decider a token names, if it verifies as an identity provider's token for tessera.
    fn verify(&self, token: &str) -> Result<Decider, String> {
        let policy = self.pipeline.policy();
        let Some(jwt_issuer) = policy.jwt_issuer.clone().filter(|i| !i.is_empty()) else {
            return Err("delegation needs jwt_issuer in the daemon's config".into());
        };
        let issuer = crate::publish::oidc::delegation_issuer(&jwt_issuer);
        let keys = TesseraKeys::of(&*self.ca, &policy, &issuer, &jwt_issuer);
        let now = crate::clock::unix_secs(self.pipeline.clock.now());
        let subject = trust::verify(token, &policy.delegation_issuers, &keys, now)?;
        if subject.origin != Origin::IdentityProvider {
            return Err(
                "a delegated token cannot decide an approval: use the user's own identity-provider token".into()
            );
        }
        Ok(Decider::User {
            sub: subject.user,
            issuer: subject.issuer,
            token_sha256: trust::signing_input_sha256(token),
            iat: subject.iat,
        })
    }

    /// The audit line of a refused decision on a live approval (none for unknown ids).
    fn refused(&self, id: &str, by: Option<&Decider>, code: &'static str, why: &str) {
        let Some(a) = self.approvals.get(id) else { return };
        let unknown = Decider::User { sub: String::new(), issuer: String::new(), token_sha256: [0; 32], iat: None };
        let mut rec = decision_record(&a, Outcome::Refused, by.unwrap_or(&unknown));
        if by.is_none() {
            rec.approver = None;
        }
        rec.error = Some((code, why.to_owned()));
        self.events.emit(Event::Delegation(Box::new(rec)));
        tracing::warn!(approval = %a.approval_id, "approval decision refused: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request {
        let mut headers = ::http::HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(::http::header::AUTHORIZATION, a.parse().unwrap());
        }
        Request {
            method: Method::POST,
            uri: "/approvals/x/approve".parse().unwrap(),
            headers,
            body: Default::default(),
            truncated: false,
            caller: http::Caller::Tcp,
        }
    }

    #[test]
    fn the_bearer_token_is_read_from_the_header() {
        assert_eq!(bearer(&req(Some("Bearer a.b.c"))), Some("a.b.c"));
        assert_eq!(bearer(&req(Some("bearer  a.b.c "))), Some("a.b.c"));
        assert_eq!(bearer(&req(Some("Basic YTpi"))), None);
        assert_eq!(bearer(&req(Some("Bearer "))), None);
        assert_eq!(bearer(&req(None)), None);
    }
}
