//! `tessera audit export --format ocsf`: each audit line as one OCSF 1.8.0 event (docs/ocsf.md).
//! Pure mapping: a line in, a record out; no line is dropped (what has no class of its own, or
//! is not JSON, becomes a Base Event).

use crate::events::audit::line_hash;
use serde_json::{Map, Value, json};

/// The OCSF schema version the records follow.
pub(crate) const OCSF_VERSION: &str = "1.8.0";

/// Severity: 1 Informational, 3 Medium, 4 High.
const INFO: u64 = 1;
const MEDIUM: u64 = 3;
const HIGH: u64 = 4;

/// Status: 0 Unknown, 1 Success, 2 Failure, 99 Other.
const SUCCESS: u64 = 1;
const FAILURE: u64 = 2;
const OTHER: u64 = 99;

/// One audit line (without its newline) as one OCSF record.
pub(crate) fn map_line(line: &str) -> Value {
    let hash = line_hash(line);
    let Ok(Value::Object(v)) = serde_json::from_str::<Value>(line) else {
        let mut r = class(0, 99, INFO, &Map::new());
        r["status_id"] = OTHER.into();
        r["message"] = "not a JSON audit line".into();
        finish(&mut r, &Map::new(), "", &hash, line);
        return r;
    };
    let event = v.get("event").and_then(Value::as_str).unwrap_or("");
    let mut r = match event {
        "attested" | "issued" | "refused" => svid(event, &v),
        "delegation_granted" | "delegation_refused" | "delegation_pending" => exchange(event, &v),
        "delegation_approved" | "delegation_rejected" => approval(event, &v),
        "revoked" | "revocation_lifted" => revocation(event, &v),
        "gateway_call" | "guard_action" => api_call(event, &v),
        "anomaly" => anomaly(&v),
        _ => {
            let failed = event.ends_with("_refused") || event.ends_with("_failed");
            let mut r = class(0, 99, if failed { MEDIUM } else { INFO }, &v);
            r["status_id"] = (if failed { FAILURE } else { OTHER }).into();
            r
        }
    };
    finish(&mut r, &v, event, &hash, line);
    r
}

fn s(v: &Map<String, Value>, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(x) => Some(x.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Epoch milliseconds of the line's RFC 3339 `time` (0 when absent or unreadable).
fn epoch_ms(v: &Map<String, Value>) -> i64 {
    let Some(t) = v.get("time").and_then(Value::as_str) else { return 0 };
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        .unwrap_or(0)
}

/// `metadata`: schema version, product, and the line's place in the chain (`uid` = its hash,
/// `sequence` = its seq).
fn metadata(v: &Map<String, Value>, hash: &str, event: &str) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": { "name": "tessera", "vendor_name": "tessera", "version": env!("CARGO_PKG_VERSION") },
        "log_name": "audit.log",
        "uid": hash,
        "event_code": event,
    });
    if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
        m["sequence"] = seq.into();
    }
    if let Some(t) = v.get("time").and_then(Value::as_str) {
        m["original_time"] = t.into();
    }
    m
}

/// A record's class attributes before [`finish`] adds metadata (filled in there).
fn class(class_uid: u64, activity_id: u64, severity_id: u64, v: &Map<String, Value>) -> Value {
    json!({
        "class_uid": class_uid,
        "category_uid": class_uid / 1000,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": severity_id,
        "time": epoch_ms(v),
    })
}

/// Metadata, the chain link (`metadata.uid` = the line's hash, `metadata.sequence` = its seq,
/// and all of it under `unmapped.tessera`), the raw line, the message and the Cedar decision.
fn finish(r: &mut Value, v: &Map<String, Value>, event: &str, hash: &str, line: &str) {
    r["metadata"] = metadata(v, hash, event);
    r["raw_data"] = line.into();
    r["unmapped"] = json!({ "tessera": {
        "event": event,
        "seq": v.get("seq"),
        "prev": v.get("prev"),
        "hash": hash,
    }});
    if r.get("message").is_none() {
        let reason = s(v, "reason");
        r["message"] = match reason {
            Some(why) => format!("tessera {event}: {why}"),
            None => format!("tessera {event}"),
        }
        .into();
    }
    if let Some(why) = s(v, "reason") {
        r["status_detail"] = why.into();
    }
    if let Some(auth) = authorizations(v) {
        if r.get("actor").is_none_or(Value::is_null) {
            r["actor"] = json!({ "app_name": "tessera" });
        }
        r["actor"]["authorizations"] = auth;
    }
}

/// The Cedar decision: one `{decision, policy{uid,name}}` per determining policy.
fn authorizations(v: &Map<String, Value>) -> Option<Value> {
    let decision = v.get("policy_decision").and_then(Value::as_str)?;
    let policies: Vec<&str> = v
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if policies.is_empty() {
        return Some(json!([{ "decision": decision }]));
    }
    Some(Value::Array(
        policies.iter().map(|p| json!({ "decision": decision, "policy": { "uid": p, "name": p } })).collect(),
    ))
}

/// The calling process as an OCSF `process` (pid, executable and its SHA-256, unix user).
fn process(pid: Option<&Value>, uid: Option<&Value>, exe: Option<&Value>) -> Option<Value> {
    let pid = pid.and_then(Value::as_i64)?;
    let mut p = json!({ "pid": pid });
    if let Some(path) = exe.and_then(|e| e.get("path")).and_then(Value::as_str) {
        let name = path.rsplit('/').next().unwrap_or(path);
        p["file"] = json!({ "path": path, "name": name, "type_id": 1 });
        if let Some(h) = exe.and_then(|e| e.get("sha256")).and_then(Value::as_str) {
            p["file"]["hashes"] = json!([{ "algorithm_id": 3, "value": h }]);
        }
    }
    if let Some(uid) = uid.and_then(Value::as_u64) {
        p["user"] = json!({ "uid": uid.to_string() });
    }
    Some(p)
}

fn actor_of(v: &Map<String, Value>) -> Value {
    let mut a = Map::new();
    if let Some(p) = process(v.get("pid"), v.get("uid"), v.get("exe")) {
        a.insert("process".into(), p);
    }
    if let Some(uid) = v.get("uid").and_then(Value::as_u64) {
        a.insert("user".into(), json!({ "uid": uid.to_string() }));
    }
    if a.is_empty() {
        a.insert("app_name".into(), "tessera".into());
    }
    Value::Object(a)
}

/// The first SPIFFE ID a line names (issued, denied, or the agent's).
fn spiffe_id(v: &Map<String, Value>) -> Option<String> {
    let first = |k: &str| v.get(k)?.as_array()?.first()?.get("spiffe_id")?.as_str().map(str::to_owned);
    first("issued").or_else(|| first("denied")).or_else(|| {
        let e = v.get("entries")?.as_array()?.first()?;
        e.as_str().map(str::to_owned).or_else(|| e.get("spiffe_id")?.as_str().map(str::to_owned))
    })
}

/// Authentication (3002): attested → 1 Logon, issued → 3 Authentication Ticket, refused → 1
/// Logon failed. The user is the workload: its SPIFFE ID (name) and unix uid.
fn svid(event: &str, v: &Map<String, Value>) -> Value {
    let (activity, ok) = match event {
        "issued" => (3, true),
        "attested" => (1, true),
        _ => (1, false),
    };
    let mut r = class(3002, activity, if ok { INFO } else { MEDIUM }, v);
    r["status_id"] = (if ok { SUCCESS } else { FAILURE }).into();
    let mut user = json!({ "uid": s(v, "uid").unwrap_or_else(|| "unknown".into()) });
    if let Some(id) = spiffe_id(v) {
        user["name"] = id.into();
    }
    r["user"] = user;
    r["actor"] = actor_of(v);
    r["service"] = json!({ "name": "SPIFFE Workload API", "uid": s(v, "rpc") });
    r["auth_protocol"] = "SPIFFE".into();
    r["auth_protocol_id"] = 99.into();
    r
}

/// Authentication (3002), 4 Service Ticket Request: an RFC 8693 token exchange. The user is the
/// person the agent acts for; the actor the agent.
fn exchange(event: &str, v: &Map<String, Value>) -> Value {
    let status = match event {
        "delegation_granted" => SUCCESS,
        "delegation_refused" => FAILURE,
        _ => OTHER,
    };
    let mut r = class(3002, 4, if status == FAILURE { MEDIUM } else { INFO }, v);
    r["status_id"] = status.into();
    if status == OTHER {
        r["status"] = "pending approval".into();
    }
    r["user"] = json!({ "name": s(v, "user").unwrap_or_else(|| "unknown".into()) });
    r["actor"] = agent_actor(v);
    r["service"] = json!({ "name": "tessera token exchange", "uid": v.get("audience") });
    r["auth_protocol"] = "OAuth 2.0 Token Exchange".into();
    r["auth_protocol_id"] = 99.into();
    r
}

fn agent_actor(v: &Map<String, Value>) -> Value {
    let Some(Value::Object(agent)) = v.get("agent") else { return actor_of(v) };
    let mut a = actor_of(agent);
    if let Some(id) = s(agent, "spiffe_id") {
        a["app_uid"] = id.clone().into();
        a["app_name"] = id.into();
    }
    a
}

/// User Access Management (3005): the user's decision on a pending exchange; approved → 1
/// Assign Privileges (success), rejected → 1 with status Failure.
fn approval(event: &str, v: &Map<String, Value>) -> Value {
    let ok = event == "delegation_approved";
    let mut r = class(3005, 1, if ok { INFO } else { MEDIUM }, v);
    r["status_id"] = (if ok { SUCCESS } else { FAILURE }).into();
    let user = s(v, "user").unwrap_or_else(|| "unknown".into());
    r["user"] = json!({ "name": user });
    let scopes = v.get("scopes_granted").filter(|x| x.is_array()).or_else(|| v.get("scopes_requested"));
    r["privileges"] = scopes.filter(|x| x.is_array()).cloned().unwrap_or_else(|| json!([]));
    r["actor"] = agent_actor(v);
    if let Some(a) = s(v, "approver") {
        r["actor"]["user"] = json!({ "name": a });
    }
    r
}

/// Account Change (3001): `revoked` → 5 Disable, `revocation_lifted` → 2 Enable. The user is
/// what the rule names (a SPIFFE ID or a selector); the actor the admin who ran `tessera revoke`.
fn revocation(event: &str, v: &Map<String, Value>) -> Value {
    let revoked = event == "revoked";
    let mut r = class(3001, if revoked { 5 } else { 2 }, if revoked { MEDIUM } else { INFO }, v);
    r["status_id"] = SUCCESS.into();
    let rule = v.get("rule").and_then(Value::as_object).cloned().unwrap_or_default();
    let target = s(&rule, "spiffe_id").or_else(|| s(&rule, "selector")).unwrap_or_else(|| "unknown".into());
    r["user"] = json!({ "name": target, "uid": s(&rule, "id") });
    if let Some(Value::Object(by)) = v.get("by") {
        r["actor"] = actor_of(by);
    }
    if let Some(why) = s(&rule, "reason") {
        r["message"] = format!("tessera {event} rule {}: {why}", s(&rule, "id").unwrap_or_default()).into();
    }
    r
}

/// API Activity (6003): a gateway call or guard action; the activity from the HTTP method.
fn api_call(event: &str, v: &Map<String, Value>) -> Value {
    let method = s(v, "method").unwrap_or_default().to_ascii_uppercase();
    let activity = match method.as_str() {
        "POST" => 1,
        "GET" | "HEAD" => 2,
        "PUT" | "PATCH" => 3,
        "DELETE" => 4,
        _ => 99,
    };
    let allowed = s(v, "decision").is_some_and(|d| d == "allow" || d == "allowed");
    let mut r = class(6003, activity, if allowed { INFO } else { MEDIUM }, v);
    r["status_id"] = (if allowed { SUCCESS } else { FAILURE }).into();
    let mut actor = actor_of(v);
    if let Some(agent) = s(v, "agent") {
        actor["app_uid"] = agent.clone().into();
        actor["app_name"] = agent.into();
    }
    if let Some(user) = s(v, "user") {
        actor["user"] = json!({ "name": user });
    }
    r["actor"] = actor;
    let operation = s(v, "tool")
        .map(|t| format!("tools/call {t}"))
        .or_else(|| s(v, "mcp_method"))
        .unwrap_or_else(|| if method.is_empty() { event.to_owned() } else { method.clone() });
    let service = s(v, "guard").or_else(|| s(v, "route")).unwrap_or_else(|| event.to_owned());
    r["api"] = json!({ "operation": operation, "service": { "name": service } });
    r["src_endpoint"] = match s(v, "source") {
        Some(src) => endpoint(&src),
        None => {
            json!({ "uid": s(v, "pid").map_or_else(|| "unknown".to_owned(), |p| format!("pid:{p}")), "name": "local process" })
        }
    };
    let mut req = json!({ "http_method": method, "url": { "path": v.get("path") } });
    if let Some(host) = s(v, "host") {
        req["url"]["hostname"] = host.clone().into();
        r["dst_endpoint"] = json!({ "hostname": host });
    }
    r["http_request"] = req;
    if let Some(code) = v.get("status").and_then(Value::as_u64) {
        r["http_response"] = json!({ "code": code });
    }
    r
}

/// `ip:port` (or `[v6]:port`) as an OCSF endpoint.
fn endpoint(src: &str) -> Value {
    match src.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({ "ip": a.ip().to_string(), "port": a.port() }),
        Err(_) => json!({ "name": src }),
    }
}

/// Detection Finding (2004), 1 Create: an `anomaly` line (`kind`, `agent`).
fn anomaly(v: &Map<String, Value>) -> Value {
    let mut r = class(2004, 1, HIGH, v);
    r["status_id"] = OTHER.into();
    let kind = s(v, "kind").unwrap_or_else(|| "unknown".into());
    let agent = s(v, "agent").unwrap_or_else(|| "unknown agent".into());
    let uid = format!("tessera-anomaly-{}", s(v, "seq").unwrap_or_default());
    r["finding_info"] = json!({ "uid": uid, "title": format!("{kind} anomaly of {agent}"), "types": [kind] });
    r["actor"] = json!({ "app_uid": agent, "app_name": agent });
    if let Some(p) = process(v.get("pid"), v.get("uid"), v.get("exe")) {
        r["actor"]["process"] = p;
    }
    r
}

#[cfg(test)]
mod tests;
