//! The audit record of one token exchange or approval decision (an [`Event::Delegation`]). It
//! names who acted for whom with what evidence; it never holds a token, only its `jti`. It lives
//! in the event spine (the delegation service fills it in).
//!
//! [`Event::Delegation`]: super::Event::Delegation

use super::ExeEvidence;
use serde_json::{Value, json};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A token was issued.
    Granted,
    /// The exchange was refused (an OAuth error).
    Refused,
    /// An approval scope was asked for: a human must decide.
    Pending,
    /// An owner approved a pending exchange (admin socket).
    Approved,
    /// An owner rejected it.
    Rejected,
}

impl Outcome {
    pub(crate) fn audit_name(self) -> &'static str {
        match self {
            Outcome::Granted => "delegation_granted",
            Outcome::Refused => "delegation_refused",
            Outcome::Pending => "delegation_pending",
            Outcome::Approved => "delegation_approved",
            Outcome::Rejected => "delegation_rejected",
        }
    }
}

/// The calling agent as attested.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentEvidence {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub exe: Option<ExeEvidence>,
    pub selectors: Vec<String>,
    /// The SPIFFE ID it acts as (None: no entry with delegation).
    pub spiffe_id: Option<String>,
    /// The process's start time in clock ticks since boot (with the pid, it names the process).
    pub start_ticks: Option<u64>,
    /// The owner of the entry it acts as.
    pub owner: Option<String>,
}

/// One exchange or decision.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub outcome: Outcome,
    pub agent: AgentEvidence,
    /// The end user (`sub` of the verified subject token).
    pub user: Option<String>,
    pub subject_issuer: Option<String>,
    pub subject_jti: Option<String>,
    /// The new token's `act` chain, outermost (this agent) first.
    pub chain: Vec<String>,
    pub scopes_requested: Vec<String>,
    pub scopes_granted: Vec<String>,
    pub audience: Option<String>,
    pub jti: Option<String>,
    pub expires_at: Option<u64>,
    pub approval_id: Option<String>,
    /// The uid that approved or rejected (admin socket).
    pub approver_uid: Option<u32>,
    /// Who approved or rejected: `uid:N` (admin socket) or the user's `sub` (their own token).
    pub approver: Option<String>,
    /// When the approval used (or given) was given, unix seconds.
    pub approved_at: Option<u64>,
    /// The RFC 9396 details asked for, as requested.
    pub authorization_details: Option<Value>,
    /// The request came over the `[approvals] listen` socket (no local uid): a refusal counts
    /// against that listener's budget.
    pub remote_decider: bool,
    /// The OAuth error and its description, for refusals.
    pub error: Option<(&'static str, String)>,
    /// The request polled an approval (its repeated `delegation_pending` lines count against the
    /// agent's refusal budget in the audit log).
    pub poll: bool,
    /// The uid that made this request when it is not the agent's (an approval's decider): a
    /// refusal counts against that uid's budget.
    pub caller_uid: Option<u32>,
    /// `[policy]`'s verdict on the exchange (None: no policy, or refused before it was asked).
    pub policy: Option<crate::registry::authz::Verdict>,
}

impl Record {
    pub(crate) fn new(outcome: Outcome, agent: AgentEvidence) -> Self {
        Self {
            outcome,
            agent,
            user: None,
            subject_issuer: None,
            subject_jti: None,
            chain: Vec::new(),
            scopes_requested: Vec::new(),
            scopes_granted: Vec::new(),
            audience: None,
            jti: None,
            expires_at: None,
            approval_id: None,
            approver_uid: None,
            approver: None,
            approved_at: None,
            authorization_details: None,
            remote_decider: false,
            error: None,
            poll: false,
            caller_uid: None,
            policy: None,
        }
    }

    /// The audit line's fields (null where unknown, so every line has the same shape).
    pub(crate) fn audit_fields(&self) -> Value {
        let a = &self.agent;
        let mut fields = json!({
            "user": self.user,
            "agent": {
                "spiffe_id": a.spiffe_id,
                "pid": a.pid,
                "uid": a.uid,
                "exe": a.exe.as_ref().map(|e| json!({ "path": e.path, "sha256": e.sha256 })),
                "selectors": a.selectors,
            },
            "subject_issuer": self.subject_issuer,
            "subject_jti": self.subject_jti,
            "act_chain": self.chain,
            "scopes_requested": self.scopes_requested,
            "scopes_granted": self.scopes_granted,
            "audience": self.audience,
            "jti": self.jti,
            "expires_at": self.expires_at,
            "approval_id": self.approval_id,
            "approver_uid": self.approver_uid,
            "approver": self.approver,
            "approval": self.approved_at.map(|at| json!({ "approver": self.approver, "approved_at": at })),
            "authorization_details": self.authorization_details,
            "error": self.error.as_ref().map(|(code, _)| *code),
            "reason": self.error.as_ref().map(|(_, why)| why.as_str()),
        });
        if let (Some(v), Value::Object(f)) = (&self.policy, &mut fields)
            && let Value::Object(p) = v.audit()
        {
            f.extend(p);
        }
        fields
    }
}
