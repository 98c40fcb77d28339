//! One token exchange, in order: attest the caller (the same pipeline as the Workload API) →
//! its entry with `[entries.delegation]` → the request form → the subject token → `from`,
//! depth, audience, scope, RFC 9396 `authorization_details` → approval (if an `approval` scope
//! is asked for; bound to the exact details) → mint. Each step
//! that fails answers its OAuth error; every outcome is one audit record. A subject token any of
//! whose actors (or its `client_id`) is revoked or denied is refused, as its JWT-SVIDs are.

use super::approvals::{Approvals, NewApproval, Redeemed};
use super::decide::{Ask, decide};
use super::details::{self, Details};
use super::notify::Notifier;
use super::request::{self, OAuthCode, OAuthError, Requested, TOKEN_TYPE_ACCESS};
use super::token::{self, Grant};
use super::trust::{self, TesseraKeys};
use crate::caller::{Pipeline, selector_strings};
use crate::events::delegation::{AgentEvidence, Outcome, Record};
use crate::events::{Call, Event, Events, Rpc};
use crate::issuer::KeySource;
use crate::peer::PeerInfo;
use crate::registry::authz::{Ask as CedarAsk, Ctx, Resource, What};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub(crate) const RPC: Rpc = Rpc::of(Call::TokenExchange);

/// The token endpoint's shared state.
pub(crate) struct Exchange {
    pub pipeline: Arc<Pipeline>,
    pub ca: Arc<dyn KeySource>,
    pub approvals: Arc<Approvals>,
    pub events: Events,
    /// `[approvals] notify_url`: told of every new pending approval (never waited for).
    pub notifier: Option<Arc<Notifier>>,
}

/// A successful exchange's answer (RFC 8693 §2.2.1).
pub(crate) struct Issued {
    pub access_token: crate::secret::BearerToken,
    pub expires_in: u64,
    pub scope: String,
    /// The RFC 9396 details granted (as requested): returned in the response (§7).
    pub authorization_details: Option<Value>,
}

impl Issued {
    pub(crate) fn body(&self) -> Value {
        let mut v = json!({
            "access_token": self.access_token.expose(),
            "issued_token_type": TOKEN_TYPE_ACCESS,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        });
        if let Some(d) = &self.authorization_details {
            v["authorization_details"] = d.clone();
        }
        v
    }
}

impl Exchange {
    /// Run one exchange and emit its audit record. `truncated`: `body` is only the start of a
    /// body over the socket's limit.
    pub(crate) async fn run(
        &self,
        peer: &PeerInfo,
        content_type: Option<&str>,
        body: &[u8],
        truncated: bool,
    ) -> Result<Issued, OAuthError> {
        let mut rec = Record::new(
            Outcome::Refused,
            AgentEvidence { pid: peer.pid, uid: Some(peer.uid), ..AgentEvidence::default() },
        );
        let result = self.exchange(peer, content_type, body, truncated, &mut rec).await;
        match &result {
            Ok(_) => rec.outcome = Outcome::Granted,
            Err(e) => {
                if e.code == OAuthCode::AuthorizationPending {
                    rec.outcome = Outcome::Pending;
                    rec.approval_id = e.approval_id.clone();
                }
                rec.error = Some((e.code.as_str(), e.description.clone()));
                tracing::debug!(pid = ?peer.pid, uid = peer.uid, error = e.code.as_str(), reason = %e.description, "token exchange not granted");
            }
        }
        self.events.emit(Event::Delegation(Box::new(rec)));
        result
    }

    async fn exchange(
        &self,
        peer: &PeerInfo,
        content_type: Option<&str>,
        body: &[u8],
        truncated: bool,
        rec: &mut Record,
    ) -> Result<Issued, OAuthError> {
        // The form is read first only to record what was asked for; nothing is decided on it yet.
        let mut seen = Requested::default();
        let parsed = request::parse(content_type, body, truncated, &mut seen);
        rec.audience = seen.audience.take();
        rec.poll = seen.approval_id;
        rec.scopes_requested = std::mem::take(&mut seen.scopes);

        // A caller none of whose entries allows delegation is a refused caller: its `attested`
        // line counts against its uid's refusal budget in the audit log.
        let caller = self.pipeline.caller_reused_for(peer, RPC, |e| e.delegation.is_some()).await.map_err(|e| {
            OAuthError::new(OAuthCode::UnauthorizedClient, format!("the calling process has no identity: {e}"))
        })?;
        rec.agent.pid = Some(caller.attestation.pid);
        rec.agent.start_ticks = Some(caller.attestation.starttime);
        rec.agent.exe = Some(caller.attestation.exe.clone());
        rec.agent.selectors = selector_strings(&caller.attestation.selectors);
        let Some((entry, policy)) =
            caller.entries.iter().find_map(|e| e.delegation.as_ref().map(|d| (e.clone(), d.clone())))
        else {
            let ids: Vec<String> = caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect();
            rec.agent.spiffe_id = ids.first().cloned();
            return Err(OAuthError::new(
                OAuthCode::UnauthorizedClient,
                format!("no entry of this process ({}) allows delegation", ids.join(", ")),
            ));
        };
        let agent = entry.spiffe_id.to_string();
        rec.agent.spiffe_id = Some(agent.clone());
        rec.agent.owner = entry.owner.clone();
        let req = parsed?;
        rec.audience = Some(req.audience.clone());
        rec.scopes_requested = req.scopes.clone();
        // RFC 9396: the declared types (this config's), and only those the entry lists.
        let details = match &req.authorization_details {
            None => None,
            Some(raw) => Some(
                details::check(raw, caller.policy.detail_types(), &policy.authorization_details)
                    .map_err(OAuthError::invalid_details)?,
            ),
        };
        rec.authorization_details = details.as_ref().map(|d| d.requested.clone());

        let Some(jwt_issuer) = caller.policy.jwt_issuer.clone().filter(|i| !i.is_empty()) else {
            return Err(OAuthError::invalid_request("delegation needs jwt_issuer in the daemon's config"));
        };
        // Delegated tokens have an issuer of their own (RFC 8725 §3.12), never the JWT-SVIDs'.
        let issuer = crate::publish::oidc::delegation_issuer(&jwt_issuer);
        let now_t = self.pipeline.clock.now();
        let now = crate::clock::unix_secs(now_t);
        let auth = self.ca.authorities();
        let keys = TesseraKeys::of(&*self.ca, &caller.policy, &issuer, &jwt_issuer);
        let subject = trust::verify(req.subject_token.expose(), &caller.policy.delegation_issuers, &keys, now)
            .map_err(OAuthError::invalid_grant)?;
        rec.user = Some(subject.user.clone());
        rec.subject_issuer = Some(subject.issuer.clone());
        rec.subject_jti = subject.jti.clone();
        rec.chain = std::iter::once(agent.clone()).chain(subject.actors.iter().cloned()).collect();
        // A later hop holds exactly the details its subject token carries (carried on when not
        // asked for again): dropping them would drop every policy condition on them.
        let details = details::for_hop(
            details,
            subject.authorization_details.as_ref(),
            caller.policy.detail_types(),
            &policy.authorization_details,
        )
        .map_err(OAuthError::invalid_details)?;
        rec.authorization_details = details.as_ref().map(|d| d.requested.clone());
        let key = auth.signer(crate::ca::KeyKind::Delegation, now_t).cloned();
        // POLICY POINT (issue 24, part 1): what the decision sees. `context_details` is Cedar's
        // `context.details` (by type, each an object of its fields; empty without details).
        let no_details = Map::new();
        let context_details = details.as_ref().map_or(&no_details, |d| &d.by_type);
        let ask = Ask { agent: &agent, audience: &req.audience, scopes: &req.scopes, details: context_details };
        let decision =
            decide(&ask, &policy, &subject, now, key.as_ref().map(|k| crate::clock::unix_secs(k.not_after)), |id| {
                caller.policy.refuses_tokens_of(id)
            })?;
        let exp = decision.exp;
        // `decide` refused already when no key is active.
        let Some(key) = key else {
            return Err(OAuthError::new(OAuthCode::TemporarilyUnavailable, "no delegation signing key is active"));
        };

        // [policy]: Cedar decides with whether a human approved exactly this request. A request a
        // policy denies unless approved (`!context.approved` in a forbid) waits for a human as an
        // `approval` scope does; one denied even when approved is refused now.
        let selectors = selector_strings(&caller.attestation.selectors);
        let chain = rec.chain.clone();
        let cedar = |approved: bool| {
            caller.policy.authz.as_ref().map(|authz| {
                authz.decide(&CedarAsk {
                    what: What::Delegate,
                    principal: &entry.spiffe_id,
                    entry: Some(&entry),
                    selectors: Some(&selectors),
                    resource: Resource::Audience(&req.audience),
                    ctx: Ctx {
                        user: Some(&subject.user),
                        scopes: Some(&req.scopes),
                        chain: Some(&chain),
                        depth: Some(chain.len() as i64),
                        approved: Some(approved),
                        subject_issuer: Some(&subject.issuer),
                        details: Some(context_details),
                        ..Ctx::default()
                    },
                })
            })
        };
        let unapproved = cedar(false);
        let mut policy_wants_approval = false;
        // The verdict as if approved, once computed (used if the approval is granted).
        let mut if_approved = None;
        if let Some(v) = &unapproved
            && !v.permits()
        {
            match cedar(true) {
                Some(a) if a.permits() => {
                    policy_wants_approval = true;
                    if_approved = Some(a);
                }
                // Denied even if approved: those are the determining policies.
                approved => {
                    let v = approved.unwrap_or_else(|| v.clone());
                    let why = v.reason();
                    rec.policy = Some(v);
                    return Err(OAuthError::new(OAuthCode::AccessDenied, why));
                }
            }
        }
        rec.policy = unapproved;
        let approval = match decision.needs_approval || policy_wants_approval {
            true => Some(self.approval(&req, &entry, &caller, &subject, details.as_ref(), rec)?),
            false => None,
        };
        if approval.is_some() && caller.policy.authz.is_some() {
            rec.policy = if_approved.or_else(|| cedar(true));
        }

        let jti = crate::ca::serial::random_kid();
        let access_token = token::mint(
            &Grant {
                issuer: &issuer,
                user: &subject.user,
                audience: &req.audience,
                agent: &agent,
                prior_act: subject.act.as_ref(),
                scopes: &req.scopes,
                iat: now,
                exp,
                jti: &jti,
                entry: &entry,
                authorization_details: details.as_ref().map(|d| &d.requested),
                approval: approval.as_ref(),
            },
            &key,
        )
        .map_err(|e| OAuthError::new(OAuthCode::TemporarilyUnavailable, format!("signing failed: {e}")))?;
        rec.scopes_granted = req.scopes.clone();
        rec.jti = Some(jti);
        rec.expires_at = Some(exp);
        Ok(Issued {
            access_token: crate::secret::BearerToken::new(access_token),
            expires_in: exp - now,
            scope: req.scopes.join(" "),
            authorization_details: details.map(|d| d.requested),
        })
    }

    /// The approval step: open one (and notify), or redeem the one named by `approval_id`. An
    /// approved request's answer is the token's `approval` claim (`approver`, `approved_at`).
    fn approval(
        &self,
        req: &request::TokenRequest,
        entry: &crate::registry::Entry,
        caller: &crate::caller::Caller,
        subject: &trust::Subject,
        details: Option<&Details>,
        rec: &mut Record,
    ) -> Result<Value, OAuthError> {
        let agent = entry.spiffe_id.to_string();
        let token = req.subject_token.expose();
        let canonical = details.map(Details::canonical).unwrap_or_default();
        let fingerprint = fingerprint(&agent, &subject.user, token, &req.scopes, &req.audience, &canonical);
        let Some(id) = &req.approval_id else {
            let a = self
                .approvals
                .open(NewApproval {
                    agent: agent.clone(),
                    agent_uid: caller.uid,
                    agent_pid: Some(caller.attestation.pid),
                    owner: entry.owner.clone(),
                    user: subject.user.clone(),
                    scope: req.scopes.clone(),
                    audience: req.audience.clone(),
                    authorization_details: details.map(|d| d.requested.clone()),
                    fingerprint,
                    user_issuer: (subject.origin == trust::Origin::IdentityProvider).then(|| subject.issuer.clone()),
                    subject_token_sha256: trust::signing_input_sha256(token),
                })
                .map_err(|e| OAuthError::new(OAuthCode::SlowDown, e.to_string()))?;
            if let Some(n) = &self.notifier {
                n.notify(&a);
            }
            let mut e = OAuthError::new(
                OAuthCode::AuthorizationPending,
                "a human must approve this request: `tessera approve APPROVAL_ID`; then repeat it with approval_id",
            );
            e.approval_id = Some(a.approval_id);
            return Err(e);
        };
        match self.approvals.redeem(id, &fingerprint) {
            Redeemed::Approved(a) => {
                rec.approval_id = Some(a.approval_id);
                rec.approver_uid = a.decided_by;
                rec.approver = a.approver.clone();
                rec.approved_at = a.decided_at;
                Ok(json!({ "approver": a.approver, "approved_at": a.decided_at }))
            }
            Redeemed::Pending => {
                let mut e = OAuthError::new(OAuthCode::AuthorizationPending, "not decided yet; poll again");
                e.approval_id = Some(id.clone());
                Err(e)
            }
            Redeemed::TooSoon => {
                let mut e = OAuthError::new(
                    OAuthCode::SlowDown,
                    "polled sooner than the interval (2 s); wait 5 s longer between polls",
                );
                e.approval_id = Some(id.clone());
                Err(e)
            }
            Redeemed::Rejected(a) => {
                rec.approval_id = Some(a.approval_id);
                rec.approver_uid = a.decided_by;
                rec.approver = a.approver;
                Err(OAuthError::new(OAuthCode::AccessDenied, "the request was rejected"))
            }
            Redeemed::Unknown => {
                rec.approval_id = Some(id.chars().take(64).collect());
                Err(OAuthError::new(
                    OAuthCode::AccessDenied,
                    "no approval with this id for this request (unknown, expired, already used, or made for \
                     other scopes, audience or authorization_details: ask again for a new approval)",
                ))
            }
        }
    }
}

/// What an approval approves: this agent, this user's token, these scopes, this audience, these
/// `authorization_details` (their canonical text; empty: none).
fn fingerprint(
    agent: &str,
    user: &str,
    subject_token: &str,
    scopes: &[String],
    audience: &str,
    details: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [agent, user, subject_token, &scopes.join(" "), audience, details] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fingerprint_binds_the_details() {
        let s = ["a".to_owned()];
        let f = |d: &str| super::fingerprint("spiffe://t/a", "alice", "tok", &s, "https://api", d);
        assert_ne!(f(""), f(r#"{"flight_booking":{"amount":500}}"#));
        assert_ne!(f(r#"{"flight_booking":{"amount":500}}"#), f(r#"{"flight_booking":{"amount":501}}"#));
        assert_eq!(f("x"), f("x"));
    }
}
