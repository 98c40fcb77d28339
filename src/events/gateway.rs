//! The audit record of one call through the node gateway (an [`Event::GatewayCall`]): who called
//! (the attested process and the SPIFFE ID it acted as), for whom (a delegated token's user and
//! `act` chain), through which route with which credential (its name, never its value), what
//! (method, host, path without the query) and how it ended. Refusals are records too, with the
//! decision `deny` and the reason.
//!
//! [`Event::GatewayCall`]: super::Event::GatewayCall

use super::ExeEvidence;
use serde_json::{Value, json};

/// How the call reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Origin-form under a route's `prefix` (an SDK's base URL).
    BaseUrl,
    /// Absolute-form from an `http_proxy` client.
    Proxy,
    /// Origin-form routed by `Host` (the Unix socket).
    Host,
    /// CONNECT to a route with `tunnel = true`.
    Tunnel,
    /// Not routed (refused before a route was found).
    Unrouted,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::BaseUrl => "base_url",
            Mode::Proxy => "proxy",
            Mode::Host => "host",
            Mode::Tunnel => "tunnel",
            Mode::Unrouted => "unrouted",
        }
    }
}

/// One call, allowed or refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct GatewayCall {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    pub exe: Option<ExeEvidence>,
    /// `unix` or `tcp` (attributed by socket diagnostics).
    pub transport: &'static str,
    /// The SPIFFE ID the caller acted as.
    pub agent: Option<String>,
    pub route: Option<String>,
    pub mode: Option<&'static str>,
    /// The credential's name (never its value).
    pub credential: Option<String>,
    /// A delegated token's user, `act` chain (outermost first), scope and `jti`.
    pub user: Option<String>,
    pub act: Vec<String>,
    pub scope: Option<String>,
    pub jti: Option<String>,
    pub method: String,
    pub host: Option<String>,
    /// Without the query.
    pub path: String,
    /// The status the caller got (None: the connection ended before a response).
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_ms: f64,
    pub allowed: bool,
    pub reason: String,
    /// `[policy]`'s verdict on the call (None: no policy configured, or refused before it).
    pub policy: Option<crate::registry::authz::Verdict>,
}

impl GatewayCall {
    pub(crate) fn decision(&self) -> &'static str {
        if self.allowed { "allow" } else { "deny" }
    }

    /// The metric label of how it ended.
    pub(crate) fn result(&self) -> &'static str {
        match (self.allowed, self.status) {
            (false, _) => "denied",
            (true, Some(s)) if s < 400 => "ok",
            (true, Some(s)) if s < 500 => "client_error",
            (true, Some(502..=504)) => "upstream_error",
            (true, Some(_)) => "server_error",
            (true, None) => "aborted",
        }
    }

    pub(crate) fn audit_fields(&self) -> Value {
        let mut fields = json!({
            "agent": self.agent,
            "pid": self.pid,
            "uid": self.uid,
            "exe": self.exe.as_ref().map(|e| json!({ "path": e.path, "sha256": e.sha256 })),
            "transport": self.transport,
            "route": self.route,
            "mode": self.mode,
            "credential": self.credential,
            "user": self.user,
            "act": self.act,
            "scope": self.scope,
            "jti": self.jti,
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "status": self.status,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "duration_ms": (self.duration_ms * 1000.0).round() / 1000.0,
            "decision": self.decision(),
            "reason": self.reason,
        });
        if let (Some(v), Value::Object(f)) = (&self.policy, &mut fields)
            && let Value::Object(p) = v.audit()
        {
            f.extend(p);
        }
        fields
    }
}
