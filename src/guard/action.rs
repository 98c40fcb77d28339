//! One request at a guard: authenticate the bearer token → (MCP: read the JSON-RPC message and
//! check its headers) → decide `Action::"serve"` → forward without the token → stream the answer
//! back (a `tools/list` answer filtered). Every refusal is a JSON answer with a reason: 400
//! (malformed), 401 with `WWW-Authenticate` (no valid token), 403 `{"error":"forbidden"}`
//! (denied by policy), or for a denied MCP request a JSON-RPC error (HTTP 200) the client shows.

use super::auth::{AuthError, Principal};
use super::filter::{self, MayCall, SseFilter};
use super::rpc::{self, Message};
use super::server::{Activity, Hold, Peer, Shared, json, refusal};
use crate::config::guard::Guard;
use crate::gateway::body::{self, GwBody, Metered};
use crate::net::http::Answer;
use crate::net::http::hop::strip_hop_by_hop;
use crate::registry::Policy;
use crate::registry::authz::{Ask, Ctx, Resource, What};
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The `Via` pseudonym (RFC 9110 §7.6.3).
const VIA: &str = "1.1 tessera-guard";

/// A decision, in the terms the guard needs.
pub(super) struct Decided {
    pub permits: bool,
    /// The audit members (`policy_decision`, `policies`, `policy_errors`).
    pub audit: Value,
    pub reason: String,
    pub policies: Vec<String>,
}

/// Decide `Action::"serve"` on `resource` for `p`. Without `[policy]`, the token was enough.
pub(super) fn decide(
    policy: &Policy,
    p: &Principal,
    resource: Resource<'_>,
    method: &str,
    path: &str,
    mcp_method: Option<&str>,
) -> Decided {
    let Some(authz) = &policy.authz else {
        return Decided {
            permits: true,
            audit: json!({ "policy_decision": "allow", "policies": [] }),
            reason: "no [policy]: a valid token for the guard's audience is enough".into(),
            policies: Vec::new(),
        };
    };
    let entry = policy.registry.entries().iter().find(|e| e.spiffe_id == p.agent && !e.retired);
    let ask = Ask {
        what: What::Serve,
        principal: &p.agent,
        entry: entry.map(|e| &**e),
        selectors: None,
        resource,
        ctx: Ctx {
            method: Some(method),
            path: Some(path),
            user: p.user.as_deref(),
            scopes: Some(&p.scopes),
            chain: Some(&p.chain),
            mcp_method,
            ..Ctx::default()
        },
    };
    let v = authz.decide(&ask);
    let reason = if v.permits() { format!("permitted ({})", v.decision.as_str()) } else { v.reason() };
    Decided { permits: v.permits(), audit: v.audit(), reason, policies: v.policies }
}

/// `error_description` text safe inside a quoted string.
fn quotable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ').take(200).collect()
}

/// Refuse a request without a valid token.
fn unauthenticated(hold: Hold, guard: &Guard, e: &AuthError) -> Response<GwBody> {
    let reason = e.reason();
    let (answer, error, challenge) = match e {
        AuthError::Missing => {
            (Answer::Unauthorized, "unauthorized", format!("Bearer realm=\"tessera guard {}\"", guard.name))
        }
        AuthError::Malformed(_) => (
            Answer::BadRequest,
            "invalid_request",
            format!("Bearer error=\"invalid_request\", error_description=\"{}\"", quotable(&reason)),
        ),
        AuthError::Invalid(_) => (
            Answer::Unauthorized,
            "invalid_token",
            format!("Bearer error=\"invalid_token\", error_description=\"{}\"", quotable(&reason)),
        ),
    };
    let mut r = refusal(answer, error, &reason);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    hold.answer(r, false, reason)
}

/// A path whose meaning an upstream could read differently from the policy: dot segments,
/// encoded dots, slashes or backslashes, backslashes.
fn ambiguous_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.contains('\\')
        || ["%2e", "%2f", "%5c", "%00"].iter().any(|e| lower.contains(e))
        || path.split('/').any(|seg| seg == "." || seg == "..")
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    peer: Peer,
    activity: Arc<Activity>,
    req: Request<Incoming>,
) -> Response<GwBody> {
    let guard = shared.config.borrow().clone();
    let mut hold = Hold::new(&shared, &guard, &peer, activity, &req);
    let policy = shared.pipeline.policy();
    let now = shared.pipeline.clock.now();
    let principal = shared.verifier.authenticate(req.headers(), peer.client.as_ref(), &guard.audience, &policy, now);
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return unauthenticated(hold, &guard, &e),
    };
    hold.rec.token = Some(principal.kind.as_str());
    hold.rec.agent = Some(principal.agent.to_string());
    hold.rec.user = principal.user.clone();
    hold.rec.act = principal.chain.clone();
    hold.rec.scopes = principal.scopes.clone();
    hold.rec.jti = principal.jti.clone();
    let path = req.uri().path().to_owned();
    if ambiguous_path(&path) {
        let why = "the path has dot segments or encoded dots, slashes or backslashes".to_owned();
        return hold.refuse(Answer::BadRequest, "bad_request", why);
    }
    let limit = guard.limits.max_request_body;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return hold.refuse(
            Answer::PayloadTooLarge,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        );
    }
    let (parts, incoming) = req.into_parts();
    if guard.mcp && parts.method == Method::POST {
        return mcp(&shared, &guard, policy, principal, parts, incoming, hold).await;
    }
    let d = decide(&policy, &principal, Resource::Guard(&guard.name), parts.method.as_str(), &path, None);
    hold.rec.verdict = Some(d.audit.clone());
    if !d.permits {
        return forbidden(hold, d);
    }
    let over = Arc::new(AtomicBool::new(false));
    let up = Metered::new(incoming, Arc::new(AtomicU64::new(0)), guard.limits.idle_timeout)
        .limit(limit, over.clone())
        .without_trailers()
        .boxed();
    forward(&shared, &guard, &principal, parts, up, hold, d.reason, None, over).await
}

fn forbidden(hold: Hold, d: Decided) -> Response<GwBody> {
    let body = json!({ "error": "forbidden", "reason": d.reason, "policies": d.policies });
    hold.answer(json(Answer::Forbidden, &body), false, d.reason)
}

async fn mcp(
    shared: &Shared,
    guard: &Guard,
    policy: Arc<Policy>,
    principal: Principal,
    parts: http::request::Parts,
    incoming: Incoming,
    mut hold: Hold,
) -> Response<GwBody> {
    let limit = guard.limits.max_request_body;
    let read = tokio::time::timeout(
        guard.limits.idle_timeout,
        Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
    );
    let bytes = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return hold.refuse(
                Answer::PayloadTooLarge,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            );
        }
        Ok(Err(e)) => {
            return hold.refuse(Answer::BadRequest, "bad_request", format!("the body could not be read: {e}"));
        }
        Err(_) => {
            return hold.refuse(
                Answer::RequestTimeout,
                "timeout",
                "the body did not arrive within idle_timeout".into(),
            );
        }
    };
    let refuse_rpc = |hold: Hold, id: Option<&Value>, r: rpc::Refused| {
        let body = rpc::error_body(id, r.code, &r.reason, None);
        hold.answer(json(Answer::BadRequest, &body), false, r.reason)
    };
    let msg = match rpc::message(&bytes) {
        Ok(m) => m,
        Err(r) => return refuse_rpc(hold, None, r),
    };
    hold.rec.mcp_method = msg.method().map(str::to_owned);
    if let Message::Request { tool: Some(t), .. } = &msg {
        hold.rec.tool = Some(t.clone());
    }
    if let Err(r) = rpc::headers_agree(&parts.headers, &msg) {
        return refuse_rpc(hold, msg.id(), r);
    }
    let path = parts.uri.path().to_owned();
    let resource = match &msg {
        Message::Request { tool: Some(t), .. } => Resource::Tool(t),
        _ => Resource::Guard(&guard.name),
    };
    let d = decide(&policy, &principal, resource, parts.method.as_str(), &path, msg.method());
    hold.rec.verdict = Some(d.audit.clone());
    if !d.permits {
        let Some(id) = msg.id() else { return forbidden(hold, d) };
        let what = match &hold.rec.tool {
            Some(t) => format!("tool {t:?}"),
            None => format!("{:?}", msg.method().unwrap_or_default()),
        };
        let message = format!("forbidden: {what} {}", d.reason);
        let data = json!({ "error": "forbidden", "reason": d.reason, "policies": d.policies });
        let body = rpc::error_body(Some(id), rpc::FORBIDDEN, &message, Some(data));
        return hold.answer(json(Answer::Ok, &body), false, d.reason);
    }
    let filter: Option<MayCall> = (msg.method() == Some("tools/list")).then(|| {
        let (p, name) = (principal.clone(), guard.name.clone());
        let may: MayCall = Arc::new(move |tool: &str| {
            let _ = &name;
            decide(&policy, &p, Resource::Tool(tool), "POST", &path, Some("tools/call")).permits
        });
        may
    });
    let over = Arc::new(AtomicBool::new(false));
    forward(shared, guard, &principal, parts, body::full(bytes), hold, d.reason, filter, over).await
}

#[allow(clippy::too_many_arguments, reason = "one call's pieces, passed once")]
async fn forward(
    shared: &Shared,
    guard: &Guard,
    principal: &Principal,
    mut parts: http::request::Parts,
    up_body: GwBody,
    mut hold: Hold,
    reason: String,
    filter: Option<MayCall>,
    over: Arc<AtomicBool>,
) -> Response<GwBody> {
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = http::Uri::builder()
        .scheme(guard.upstream.clone())
        .authority(guard.upstream_authority.clone())
        .path_and_query(format!("{}{pq}", guard.upstream_path))
        .build();
    let Ok(uri) = uri else {
        return hold.refuse(Answer::BadRequest, "bad_request", "the request target cannot be forwarded".into());
    };
    // The token stays here (the MCP spec forbids passing it on); the agent and user go as
    // headers the guard sets (whatever the caller sent under those names is dropped).
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::HOST] {
        h.remove(name);
    }
    let ours: Vec<http::HeaderName> = h.keys().filter(|k| k.as_str().starts_with("x-tessera-")).cloned().collect();
    for k in ours {
        h.remove(k);
    }
    if let Ok(v) = HeaderValue::from_str(&principal.agent.to_string()) {
        h.insert("x-tessera-agent", v);
    }
    if let Some(v) = principal.user.as_deref().and_then(|u| HeaderValue::from_str(u).ok()) {
        h.insert("x-tessera-user", v);
    }
    if filter.is_some() {
        // A tools/list answer is rewritten: it must come unencoded.
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    h.append(header::VIA, HeaderValue::from_static(VIA));
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    let client = match shared.client(guard.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => return hold.refuse(Answer::BadGateway, "upstream_tls", format!("the upstream's TLS settings: {e}")),
    };
    let idle = guard.limits.idle_timeout;
    let response = match tokio::time::timeout(idle, client.request(Request::from_parts(parts, up_body))).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) if over.load(Ordering::Relaxed) => {
            let limit = guard.limits.max_request_body;
            return hold.refuse(
                Answer::PayloadTooLarge,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            );
        }
        Ok(Err(e)) => {
            return hold.refuse(
                Answer::BadGateway,
                "upstream_unavailable",
                format!("upstream {}: {e}", guard.upstream_url()),
            );
        }
        Err(_) => {
            let why = format!("upstream {} sent no answer within {idle:?}", guard.upstream_url());
            return hold.refuse(Answer::GatewayTimeout, "upstream_timeout", why);
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.append(header::VIA, HeaderValue::from_static(VIA));
    parts.version = http::Version::HTTP_11;
    let deadline = std::time::Instant::now() + guard.limits.request_timeout;
    let down = Metered::new(body, Arc::new(AtomicU64::new(0)), idle).deadline(deadline);
    let Some(may_call) = filter else {
        return hold.answer(Response::from_parts(parts, down.boxed()), true, reason);
    };
    let encoded = parts.headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity");
    if encoded {
        let why = "the upstream's tools/list answer is content-encoded: the guard cannot filter it".to_owned();
        return hold.refuse(Answer::BadGateway, "upstream_encoded", why);
    }
    let ctype =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    if ctype.starts_with("text/event-stream") {
        parts.headers.remove(header::CONTENT_LENGTH);
        let hidden = Arc::new(Mutex::new(Vec::new()));
        hold.hidden = Some(hidden.clone());
        let body = SseFilter::new(down, may_call, hidden).boxed();
        return hold.answer(Response::from_parts(parts, body), true, reason);
    }
    if !ctype.starts_with("application/json") {
        return hold.answer(Response::from_parts(parts, down.boxed()), true, reason);
    }
    let whole = match Limited::new(down, filter::MAX_FILTERED).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return hold.refuse(Answer::BadGateway, "upstream_unavailable", format!("the tools/list answer: {e}"));
        }
    };
    let body = match filter::rewrite_json(&whole, &*may_call) {
        Some((rewritten, hidden)) => {
            hold.rec.tools_hidden = hidden;
            rewritten.into()
        }
        None => whole,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    hold.answer(Response::from_parts(parts, body::full(body)), true, reason)
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_an_upstream_could_read_otherwise_are_refused() {
        for p in ["/a/../b", "/a/./b", "/..", "/a%2e%2e/b", "/a%2Fb", "/a\\b", "/a%5cb", "/a%00"] {
            assert!(super::ambiguous_path(p), "{p}");
        }
        for p in ["/", "/mcp", "/a/b.c/d", "/a..b", "/%41"] {
            assert!(!super::ambiguous_path(p), "{p}");
        }
    }

    #[test]
    fn challenge_text_is_quotable() {
        assert_eq!(super::quotable("a \"b\" \\c\n"), "a b c");
    }
}
