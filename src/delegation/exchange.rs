//! One token exchange, in order: attest the caller (the same pipeline as the Workload API) →
//! its entry with `[entries.delegation]` → the request form → the subject token → `from`,
//! depth, audience, scope → approval (if an `approval` scope is asked for) → mint. Each step
//! that fails answers its OAuth error; every outcome is one audit record. A subject token any of
//! whose actors (or its `client_id`) is revoked or denied is refused, as its JWT-SVIDs are.

use super::approvals::{Approvals, NewApproval, Redeemed};
use super::decide::{Ask, decide};
use super::request::{self, OAuthCode, OAuthError, Requested, TOKEN_TYPE_ACCESS};
use super::token::{self, Grant};
use super::trust::{self, TesseraKeys};
use crate::caller::{Pipeline, selector_strings};
use crate::events::delegation::{AgentEvidence, Outcome, Record};
use crate::events::{Call, Event, Events, Rpc};
use crate::issuer::KeySource;
use crate::peer::PeerInfo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub(crate) const RPC: Rpc = Rpc::of(Call::TokenExchange);

/// The token endpoint's shared state.
pub(crate) struct Exchange {
    pub pipeline: Arc<Pipeline>,
    pub ca: Arc<dyn KeySource>,
    pub approvals: Arc<Approvals>,
    pub events: Events,
}

/// A successful exchange's answer (RFC 8693 §2.2.1).
pub(crate) struct Issued {
    pub access_token: crate::secret::BearerToken,
    pub expires_in: u64,
    pub scope: String,
}

impl Issued {
    pub(crate) fn body(&self) -> Value {
        json!({
            "access_token": self.access_token.expose(),
            "issued_token_type": TOKEN_TYPE_ACCESS,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        })
    }
}

impl Exchange {
    /// Run one exchange and emit its audit record.
    pub(crate) async fn run(
        &self,
        peer: &PeerInfo,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Issued, OAuthError> {
        let mut rec = Record::new(
            Outcome::Refused,
            AgentEvidence { pid: peer.pid, uid: Some(peer.uid), ..AgentEvidence::default() },
        );
        let result = self.exchange(peer, content_type, body, &mut rec).await;
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
        rec: &mut Record,
    ) -> Result<Issued, OAuthError> {
        // The form is read first only to record what was asked for; nothing is decided on it yet.
        let mut seen = Requested::default();
        let parsed = request::parse(content_type, body, &mut seen);
        rec.audience = seen.audience.take();
        rec.poll = seen.approval_id;
        rec.scopes_requested = std::mem::take(&mut seen.scopes);

        // A caller none of whose entries allows delegation is a refused caller: its `attested`
        // line counts against its uid's refusal budget in the audit log.
        let caller = self.pipeline.caller_reused_for(peer, RPC, |e| e.delegation.is_some()).await.map_err(|e| {
            OAuthError::new(OAuthCode::UnauthorizedClient, format!("the calling process has no identity: {e}"))
        })?;
        rec.agent.pid = Some(caller.attestation.pid);
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
        let req = parsed?;
        rec.audience = Some(req.audience.clone());
        rec.scopes_requested = req.scopes.clone();

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
        let key = auth.signer(crate::ca::KeyKind::Delegation, now_t).cloned();
        let ask = Ask { agent: &agent, audience: &req.audience, scopes: &req.scopes };
        let decision =
            decide(&ask, &policy, &subject, now, key.as_ref().map(|k| crate::clock::unix_secs(k.not_after)), |id| {
                caller.policy.refuses_tokens_of(id)
            })?;
        let exp = decision.exp;
        // `decide` refused already when no key is active.
        let Some(key) = key else {
            return Err(OAuthError::new(OAuthCode::TemporarilyUnavailable, "no delegation signing key is active"));
        };

        if decision.needs_approval {
            let fingerprint =
                fingerprint(&agent, &subject.user, req.subject_token.expose(), &req.scopes, &req.audience);
            match &req.approval_id {
                None => {
                    let a = self
                        .approvals
                        .open(NewApproval {
                            agent: agent.clone(),
                            agent_uid: caller.uid,
                            agent_pid: Some(caller.attestation.pid),
                            user: subject.user.clone(),
                            scope: req.scopes.clone(),
                            audience: req.audience.clone(),
                            fingerprint,
                        })
                        .map_err(|e| OAuthError::new(OAuthCode::SlowDown, e.to_string()))?;
                    let mut e = OAuthError::new(
                        OAuthCode::AuthorizationPending,
                        "a human must approve this request: `tessera approve APPROVAL_ID`; then repeat it with approval_id",
                    );
                    e.approval_id = Some(a.approval_id);
                    return Err(e);
                }
                Some(id) => match self.approvals.redeem(id, &fingerprint) {
                    Redeemed::Approved(a) => {
                        rec.approval_id = Some(a.approval_id);
                        rec.approver_uid = a.decided_by;
                    }
                    Redeemed::Pending => {
                        let mut e = OAuthError::new(OAuthCode::AuthorizationPending, "not decided yet; poll again");
                        e.approval_id = Some(id.clone());
                        return Err(e);
                    }
                    Redeemed::TooSoon => {
                        let mut e = OAuthError::new(
                            OAuthCode::SlowDown,
                            "polled sooner than the interval (2 s); wait 5 s longer between polls",
                        );
                        e.approval_id = Some(id.clone());
                        return Err(e);
                    }
                    Redeemed::Rejected(a) => {
                        rec.approval_id = Some(a.approval_id);
                        rec.approver_uid = a.decided_by;
                        return Err(OAuthError::new(OAuthCode::AccessDenied, "the request was rejected"));
                    }
                    Redeemed::Unknown => {
                        rec.approval_id = Some(id.chars().take(64).collect());
                        return Err(OAuthError::new(
                            OAuthCode::AccessDenied,
                            "no approval with this id for this request (unknown, expired, or already used)",
                        ));
                    }
                },
            }
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
        })
    }
}

/// What an approval approves: this agent, this user's token, these scopes, this audience.
fn fingerprint(agent: &str, user: &str, subject_token: &str, scopes: &[String], audience: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [agent, user, subject_token, &scopes.join(" "), audience] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}
