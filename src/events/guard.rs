//! The audit record of one action at a guard (an [`Event::GuardAction`]): which guard, who
//! called (the agent the bearer token names, and for a delegated token the user, the `act`
//! chain, the scopes and the `jti`; never the token), what (method, path without the query, the
//! MCP method and tool), the policy's decision with its determining policies, and how it ended.
//! Refusals are records too (decision `deny`), counted against the caller's refusal budget.
//!
//! [`Event::GuardAction`]: super::Event::GuardAction

use serde_json::{Value, json};

/// One action, allowed or refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuardAction {
    pub guard: String,
    /// A Unix peer's uid (its refusal budget); a TCP peer's address otherwise.
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub source: Option<String>,
    /// `delegated` (a tessera delegated token), `jwt_svid`, or `x509_svid` (an mTLS client
    /// without a token); None: no valid token.
    pub token: Option<&'static str>,
    /// An mTLS guard's client: its X.509-SVID's SPIFFE ID (audited only then).
    pub client_spiffe_id: Option<String>,
    /// The SPIFFE ID acting (a delegated token's outermost actor, a JWT-SVID's subject).
    pub agent: Option<String>,
    pub user: Option<String>,
    /// The `act` chain, outermost first.
    pub act: Vec<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    pub method: String,
    /// Without the query.
    pub path: String,
    /// The JSON-RPC method of an MCP message.
    pub mcp_method: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// `tools/list`: the tools taken out of the answer.
    pub tools_hidden: Vec<String>,
    /// The policy's verdict (`policy_decision`, `policies`, `policy_errors`); None when the
    /// request was refused before a decision (no valid token, a malformed body).
    pub verdict: Option<Value>,
    pub allowed: bool,
    /// The status the caller got (None: the connection ended before a response).
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub reason: String,
}

impl GuardAction {
    pub(crate) fn decision(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }

    pub(crate) fn audit_fields(&self) -> Value {
        let mut v = json!({
            "guard": self.guard,
            "uid": self.uid,
            "pid": self.pid,
            "source": self.source,
            "token": self.token,
            "agent": self.agent,
            "user": self.user,
            "act": self.act,
            "scopes": self.scopes,
            "jti": self.jti,
            "method": self.method,
            "path": self.path,
            "mcp_method": self.mcp_method,
            "tool": self.tool,
            "status": self.status,
            "duration_ms": (self.duration_ms * 1000.0).round() / 1000.0,
            "decision": self.decision(),
            "reason": self.reason,
        });
        if !self.tools_hidden.is_empty() {
            v["tools_hidden"] = json!(self.tools_hidden);
        }
        if let Some(id) = &self.client_spiffe_id {
            v["client_spiffe_id"] = json!(id);
        }
        match &self.verdict {
            Some(Value::Object(m)) => {
                for (k, x) in m {
                    v[k] = x.clone();
                }
            }
            _ => {
                v["policy_decision"] = Value::Null;
                v["policies"] = json!([]);
            }
        }
        v
    }
}
