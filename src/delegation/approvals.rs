//! Pending approvals: an exchange that asks for an `approval` scope waits here for a human's
//! yes or no: an operator on the admin socket (`tessera approve`), or the user with their own
//! token on the `[approvals] listen` socket ([`Decider`]). The agent repeats its request with the
//! `approval_id`; an approved one is redeemed exactly once, and only by the very request it was
//! made for (agent, user, subject token, scopes, audience, `authorization_details`). Bounded per
//! uid and in total; each expires after 10 minutes.

use crate::clock::{Clock, SystemClock};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const APPROVAL_TTL: Duration = Duration::from_secs(600);
/// How soon an agent may poll a pending approval again: it is told `interval: 2` (RFC 8628
/// §3.5); a poll sooner than this (the interval less some scheduling slack) is answered
/// `slow_down`.
pub(crate) const MIN_POLL_GAP: Duration = Duration::from_millis(1500);
/// Pending approvals one agent uid may have open, and all of them together.
pub(crate) const MAX_PER_UID: usize = 32;
pub(crate) const MAX_TOTAL: usize = 1024;

/// A request waiting for (or given) a decision.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Approval {
    pub approval_id: String,
    pub agent: String,
    pub agent_uid: u32,
    pub agent_pid: Option<i32>,
    /// The agent entry's owner.
    pub owner: Option<String>,
    pub user: String,
    pub scope: Vec<String>,
    pub audience: String,
    /// The RFC 9396 details asked for, as requested (null: none).
    pub authorization_details: Option<Value>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
    pub state: State,
    /// The uid that decided (on the admin socket).
    pub decided_by: Option<u32>,
    /// Who decided: `uid:N` on the admin socket, the user's `sub` with their own token.
    pub approver: Option<String>,
    /// When (unix seconds).
    pub decided_at: Option<u64>,
    /// The request it approves (agent, user, subject token, scope, audience, details), SHA-256.
    #[serde(skip)]
    fingerprint: [u8; 32],
    /// The issuer of the user's token when it came from an identity provider (first hop): a
    /// user deciding must come from the same one.
    #[serde(skip)]
    user_issuer: Option<String>,
    /// SHA-256 of the subject token: the agent holds it, so it cannot decide.
    #[serde(skip)]
    subject_token_sha256: [u8; 32],
    #[serde(skip)]
    created: Option<Instant>,
    /// The last poll while pending.
    #[serde(skip)]
    polled: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Pending,
    Approved,
    Rejected,
}

/// What a repeated request with an `approval_id` finds.
#[derive(Debug)]
pub(crate) enum Redeemed {
    /// Approved: the token may be issued (the approval is gone now).
    Approved(Approval),
    /// Rejected (the approval is gone now).
    Rejected(Approval),
    /// Not decided yet.
    Pending,
    /// Not decided yet, and polled again sooner than [`MIN_POLL_GAP`].
    TooSoon,
    /// Unknown, expired, already used, or made for another request.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApprovalError {
    #[error("too many pending approvals for uid {0} (at most {MAX_PER_UID})")]
    PerUid(u32),
    #[error("too many pending approvals (at most {MAX_TOTAL})")]
    Total,
    #[error("no pending approval {0:?} (unknown, expired or used)")]
    NotFound(String),
    #[error("approval {0:?} was already decided")]
    Decided(String),
    /// A user who may not decide this approval.
    #[error("{0}")]
    NotYours(String),
}

/// Who decides an approval.
#[derive(Debug, Clone)]
pub(crate) enum Decider {
    /// A local process on the admin socket, by uid.
    Uid(u32),
    /// The user, with a token of a trusted identity provider (verified by the caller).
    User {
        sub: String,
        issuer: String,
        /// SHA-256 of the token's signing input (`header.payload`).
        token_sha256: [u8; 32],
        /// The token's `iat`: an approval needs a token issued after the request was made.
        iat: Option<u64>,
    },
}

impl Decider {
    /// The approver as the token's `approval` claim and the audit name it: `uid:N` or the user.
    pub(crate) fn name(&self) -> String {
        match self {
            Decider::Uid(uid) => format!("uid:{uid}"),
            Decider::User { sub, .. } => sub.clone(),
        }
    }

    pub(crate) fn uid(&self) -> Option<u32> {
        match self {
            Decider::Uid(uid) => Some(*uid),
            Decider::User { .. } => None,
        }
    }
}

/// The open approvals. Their life and poll gaps are measured on the clock's monotonic time (a
/// wall-clock step neither stretches nor cuts them); `created_at` and `expires_at` are its wall
/// time.
pub(crate) struct Approvals {
    inner: Mutex<HashMap<String, Approval>>,
    clock: Arc<dyn Clock>,
}

impl Default for Approvals {
    /// On the system clock.
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

/// The fields of a new approval request.
pub(crate) struct NewApproval {
    pub agent: String,
    pub agent_uid: u32,
    pub agent_pid: Option<i32>,
    pub owner: Option<String>,
    pub user: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub authorization_details: Option<Value>,
    pub fingerprint: [u8; 32],
    /// The subject token's issuer when it is an identity provider.
    pub user_issuer: Option<String>,
    pub subject_token_sha256: [u8; 32],
}

impl Approvals {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self { inner: Mutex::default(), clock }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Approval>> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.monotonic();
        map.retain(|_, a| a.created.is_some_and(|c| now.saturating_duration_since(c) < APPROVAL_TTL));
        map
    }

    /// Record a request awaiting a decision; its id is 128 random bits.
    pub(crate) fn open(&self, new: NewApproval) -> Result<Approval, ApprovalError> {
        let mut map = self.lock();
        if map.len() >= MAX_TOTAL {
            return Err(ApprovalError::Total);
        }
        if map.values().filter(|a| a.agent_uid == new.agent_uid).count() >= MAX_PER_UID {
            return Err(ApprovalError::PerUid(new.agent_uid));
        }
        let bytes: [u8; 16] = rand::rng().random();
        let id = crate::ca::serial::hex(&bytes);
        let now = crate::clock::unix_secs(self.clock.now());
        let a = Approval {
            approval_id: id.clone(),
            agent: new.agent,
            agent_uid: new.agent_uid,
            agent_pid: new.agent_pid,
            owner: new.owner,
            user: new.user,
            scope: new.scope,
            audience: new.audience,
            authorization_details: new.authorization_details,
            created_at: now,
            expires_at: now + APPROVAL_TTL.as_secs(),
            state: State::Pending,
            decided_by: None,
            approver: None,
            decided_at: None,
            fingerprint: new.fingerprint,
            user_issuer: new.user_issuer,
            subject_token_sha256: new.subject_token_sha256,
            created: Some(self.clock.monotonic()),
            polled: None,
        };
        map.insert(id, a.clone());
        Ok(a)
    }

    /// The approval `id`, if it is still open.
    pub(crate) fn get(&self, id: &str) -> Option<Approval> {
        self.lock().get(id).cloned()
    }

    /// A decision (once). A user decides only their own request (same `sub`, and the same
    /// identity provider for a first hop), and never with the subject token the agent holds.
    pub(crate) fn decide(&self, id: &str, approve: bool, by: &Decider) -> Result<Approval, ApprovalError> {
        let now = crate::clock::unix_secs(self.clock.now());
        let mut map = self.lock();
        let a = map.get_mut(id).ok_or_else(|| ApprovalError::NotFound(id.chars().take(64).collect()))?;
        if let Decider::User { sub, issuer, token_sha256, iat } = by {
            if *sub != a.user {
                return Err(ApprovalError::NotYours("this approval is another user's request".into()));
            }
            if a.user_issuer.as_ref().is_some_and(|i| i != issuer) {
                return Err(ApprovalError::NotYours(
                    "the token is from another identity provider than the request's".into(),
                ));
            }
            if *token_sha256 == a.subject_token_sha256 {
                return Err(ApprovalError::NotYours(
                    "this is the token the agent presented: the agent holds it, so it cannot approve".into(),
                ));
            }
            // Any token of the user the agent could hold predates its request: an approval takes a
            // token the user obtained afterwards (a fresh sign-in), never an older one.
            if approve && iat.is_none_or(|t| t < a.created_at) {
                return Err(ApprovalError::NotYours(format!(
                    "the token was issued before this request was made (iat {}, request {}): sign in again and approve with the new token",
                    iat.map_or("missing".to_owned(), |t| t.to_string()),
                    a.created_at
                )));
            }
        }
        if a.state != State::Pending {
            return Err(ApprovalError::Decided(id.to_owned()));
        }
        a.state = if approve { State::Approved } else { State::Rejected };
        a.decided_by = by.uid();
        a.approver = Some(by.name());
        a.decided_at = Some(now);
        Ok(a.clone())
    }

    /// The agent's repeated request. A decided approval is consumed; one made for another
    /// request (agent, user, token, scope or audience differ) is left alone and answers Unknown.
    pub(crate) fn redeem(&self, id: &str, fingerprint: &[u8; 32]) -> Redeemed {
        let mut map = self.lock();
        match map.get_mut(id) {
            Some(a) if &a.fingerprint == fingerprint => match a.state {
                State::Pending => {
                    let now = self.clock.monotonic();
                    if a.polled.is_some_and(|t| now.saturating_duration_since(t) < MIN_POLL_GAP) {
                        return Redeemed::TooSoon;
                    }
                    a.polled = Some(now);
                    Redeemed::Pending
                }
                State::Approved => map.remove(id).map(Redeemed::Approved).unwrap_or(Redeemed::Unknown),
                State::Rejected => map.remove(id).map(Redeemed::Rejected).unwrap_or(Redeemed::Unknown),
            },
            _ => Redeemed::Unknown,
        }
    }

    /// Every approval still open, oldest first.
    pub(crate) fn list(&self) -> Vec<Approval> {
        let mut v: Vec<Approval> = self.lock().values().cloned().collect();
        v.sort_by_key(|a| a.created);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Decider = Decider::Uid(0);

    fn new(uid: u32, fp: u8) -> NewApproval {
        NewApproval {
            agent: "spiffe://t/a".into(),
            agent_uid: uid,
            agent_pid: Some(1),
            owner: None,
            user: "alice".into(),
            scope: vec!["booking:create".into()],
            audience: "https://api".into(),
            authorization_details: None,
            fingerprint: [fp; 32],
            user_issuer: Some("https://idp".into()),
            subject_token_sha256: [9; 32],
        }
    }

    #[test]
    fn approved_once_then_gone() {
        let s = Approvals::default();
        let a = s.open(new(1, 7)).unwrap();
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::Pending));
        // Polled again at once: slow down.
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::TooSoon));
        // Another request cannot use it, nor consume it.
        s.decide(&a.approval_id, true, &ROOT).unwrap();
        assert!(matches!(s.redeem(&a.approval_id, &[8; 32]), Redeemed::Unknown));
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::Approved(ref x) if x.decided_by == Some(0)));
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::Unknown));
        assert!(matches!(s.decide(&a.approval_id, true, &ROOT), Err(ApprovalError::NotFound(_))));
    }

    /// In fake time: an approval lives APPROVAL_TTL (approved or not), and polls closer than
    /// MIN_POLL_GAP are too soon.
    #[test]
    fn an_approval_expires_after_its_ttl() {
        let clock = Arc::new(crate::clock::FakeClock::at_unix(1_700_000_000));
        let s = Approvals::new(clock.clone());
        let a = s.open(new(1, 7)).unwrap();
        assert_eq!((a.created_at, a.expires_at), (1_700_000_000, 1_700_000_000 + APPROVAL_TTL.as_secs()));
        let b = s.open(new(1, 8)).unwrap();
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::Pending));
        clock.advance(MIN_POLL_GAP - Duration::from_millis(1));
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::TooSoon));
        clock.advance(Duration::from_millis(1));
        assert!(matches!(s.redeem(&a.approval_id, &[7; 32]), Redeemed::Pending));
        s.decide(&b.approval_id, true, &ROOT).unwrap();
        // A step of the wall clock changes nothing.
        clock.set(crate::clock::from_unix_secs(1_800_000_000));
        clock.advance(APPROVAL_TTL - MIN_POLL_GAP - Duration::from_millis(1));
        assert_eq!(s.list().len(), 2, "both still open a millisecond before the end");
        clock.advance(Duration::from_millis(1));
        assert!(s.list().is_empty());
        assert!(s.get(&a.approval_id).is_none());
        // Expired: an approved one can no longer be redeemed, a pending one no longer decided.
        assert!(matches!(s.redeem(&b.approval_id, &[8; 32]), Redeemed::Unknown));
        assert!(matches!(s.decide(&a.approval_id, true, &ROOT), Err(ApprovalError::NotFound(_))));
    }

    #[test]
    fn decided_once_and_bounded_per_uid() {
        let s = Approvals::default();
        let a = s.open(new(1, 1)).unwrap();
        s.decide(&a.approval_id, false, &Decider::Uid(5)).unwrap();
        assert!(matches!(s.decide(&a.approval_id, true, &Decider::Uid(5)), Err(ApprovalError::Decided(_))));
        assert!(matches!(s.redeem(&a.approval_id, &[1; 32]), Redeemed::Rejected(_)));
        for _ in 0..MAX_PER_UID {
            s.open(new(2, 2)).unwrap();
        }
        assert!(matches!(s.open(new(2, 2)), Err(ApprovalError::PerUid(2))));
        assert!(s.open(new(3, 3)).is_ok(), "another uid is not starved");
    }

    #[test]
    fn only_the_user_decides_with_a_token_of_their_own() {
        let s = Approvals::default();
        let a = s.open(new(1, 1)).unwrap();
        let user = |sub: &str, iss: &str, t: u8| Decider::User {
            sub: sub.into(),
            issuer: iss.into(),
            token_sha256: [t; 32],
            iat: Some(u64::MAX / 2),
        };
        let refused = |by: Decider| matches!(s.decide(&a.approval_id, true, &by), Err(ApprovalError::NotYours(_)));
        assert!(refused(user("bob", "https://idp", 1)), "another user");
        assert!(refused(user("alice", "https://other-idp", 1)), "another identity provider");
        assert!(refused(user("alice", "https://idp", 9)), "the agent's own subject token");
        let d = s.decide(&a.approval_id, true, &user("alice", "https://idp", 1)).unwrap();
        assert_eq!((d.approver.as_deref(), d.decided_by), (Some("alice"), None));
        assert!(d.decided_at.is_some());
        assert!(matches!(
            s.decide(&a.approval_id, false, &user("alice", "https://idp", 1)),
            Err(ApprovalError::Decided(_))
        ));
        assert_eq!(ROOT.name(), "uid:0");
    }
}
