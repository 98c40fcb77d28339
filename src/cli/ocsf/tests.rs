use super::*;
use crate::events::audit::line_hash;

/// Required attributes per class (OCSF 1.8.0, resolved through `extends`; reference §7).
fn check_required(r: &Value) {
    for k in ["activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid"] {
        assert!(r.get(k).is_some_and(|x| !x.is_null()), "{k} missing in {r}");
    }
    assert_eq!(r["metadata"]["version"], OCSF_VERSION);
    for k in ["name", "vendor_name", "version"] {
        assert!(r["metadata"]["product"][k].is_string(), "{r}");
    }
    let class = r["class_uid"].as_u64().unwrap();
    assert_eq!(r["category_uid"].as_u64().unwrap(), class / 1000);
    assert_eq!(r["type_uid"].as_u64().unwrap(), class * 100 + r["activity_id"].as_u64().unwrap());
    assert!(r["time"].is_i64());
    let needs: &[&str] = match class {
        3001 | 3002 | 3003 | 3005 => &["user"],
        6003 => &["actor", "api", "src_endpoint"],
        2004 => &["finding_info"],
        0 => &[],
        c => panic!("unexpected class {c}"),
    };
    for k in needs {
        assert!(r.get(*k).is_some_and(Value::is_object), "{k} missing in {r}");
    }
    if let Some(u) = r.get("user") {
        assert!(["account", "name", "uid"].iter().any(|k| u.get(*k).is_some_and(|x| !x.is_null())), "{r}");
    }
    if class == 6003 {
        assert!(r["api"]["operation"].is_string());
    }
    if class == 2004 {
        assert!(r["finding_info"]["uid"].is_string());
    }
    if let Some(a) = r.get("actor") {
        let any = ["process", "user", "iam_role", "invoked_by", "session", "app_name", "app_uid"];
        assert!(any.iter().any(|k| a.get(*k).is_some()), "{r}");
    }
}

fn line(fields: Value) -> String {
    let mut m = json!({ "seq": 7, "time": "2026-12-08T01:02:03.456789Z" });
    m.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    m["prev"] = "ab".repeat(32).into();
    m.to_string()
}

fn mapped(fields: Value) -> (String, Value) {
    let l = line(fields);
    let r = map_line(&l);
    check_required(&r);
    assert_eq!(r["metadata"]["uid"], line_hash(&l));
    assert_eq!(r["unmapped"]["tessera"]["hash"], line_hash(&l));
    assert_eq!(r["unmapped"]["tessera"]["seq"], 7);
    assert_eq!(r["unmapped"]["tessera"]["prev"], "ab".repeat(32));
    assert_eq!(r["metadata"]["sequence"], 7);
    assert_eq!(r["raw_data"], l);
    (l, r)
}

#[test]
fn time_is_epoch_milliseconds() {
    let (_, r) = mapped(json!({ "event": "started" }));
    assert_eq!(r["time"], 1_796_691_723_456_i64);
}

#[test]
fn issued_is_an_authentication_ticket() {
    let (_, r) =
        mapped(json!({ "event": "issued", "rpc": "FetchX509SVID", "pid": 42, "uid": 1000, "kind": "x509_svid",
        "exe": { "path": "/usr/bin/agent", "sha256": "cd".repeat(32) },
        "issued": [{ "spiffe_id": "spiffe://example.org/agent" }], "policy_decision": "allow", "policies": ["p1"] }));
    assert_eq!(
        (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["status_id"].as_u64()),
        (Some(3002), Some(3), Some(1))
    );
    assert_eq!(r["user"]["name"], "spiffe://example.org/agent");
    assert_eq!(r["actor"]["process"]["pid"], 42);
    assert_eq!(r["actor"]["process"]["file"]["hashes"][0]["value"], "cd".repeat(32));
    assert_eq!(r["actor"]["authorizations"], json!([{ "decision": "allow", "policy": { "uid": "p1", "name": "p1" } }]));
}

#[test]
fn attested_and_refused_are_logons() {
    let (_, r) = mapped(json!({ "event": "attested", "rpc": "FetchX509SVID", "pid": 42, "uid": 1000 }));
    assert_eq!(
        (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["status_id"].as_u64()),
        (Some(3002), Some(1), Some(1))
    );
    let (_, r) = mapped(json!({ "event": "refused", "rpc": "FetchX509SVID", "pid": 42, "uid": 1000,
        "reason": "no registration entry matches the workload's selectors" }));
    assert_eq!((r["class_uid"].as_u64(), r["status_id"].as_u64()), (Some(3002), Some(2)));
    assert_eq!(r["user"]["uid"], "1000");
    assert!(r["status_detail"].as_str().unwrap().contains("no registration entry"));
    let (_, r) =
        mapped(json!({ "event": "refused", "pid": 1, "uid": 0, "policy_decision": "deny", "policies": ["a", "b"],
        "denied": [{ "spiffe_id": "spiffe://example.org/x" }] }));
    assert_eq!(r["actor"]["authorizations"].as_array().unwrap().len(), 2);
    assert_eq!(r["actor"]["authorizations"][1]["policy"]["uid"], "b");
    assert_eq!(r["user"]["name"], "spiffe://example.org/x");
}

#[test]
fn token_exchanges_are_service_ticket_requests() {
    for (event, status) in [("delegation_granted", 1), ("delegation_refused", 2), ("delegation_pending", 99)] {
        let (_, r) = mapped(json!({ "event": event, "user": "alice",
            "agent": { "spiffe_id": "spiffe://example.org/agent", "pid": 9, "uid": 1000 }, "audience": "https://api" }));
        assert_eq!(
            (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["status_id"].as_u64()),
            (Some(3002), Some(4), Some(status))
        );
        assert_eq!(r["user"]["name"], "alice");
        assert_eq!(r["actor"]["app_uid"], "spiffe://example.org/agent");
        assert_eq!(r["actor"]["process"]["pid"], 9);
    }
}

#[test]
fn approvals_are_user_access_management() {
    let (_, r) = mapped(json!({ "event": "delegation_approved", "user": "alice", "approver": "alice",
        "scopes_granted": ["read"], "agent": { "spiffe_id": "spiffe://example.org/agent" } }));
    assert_eq!(
        (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["status_id"].as_u64()),
        (Some(3005), Some(1), Some(1))
    );
    assert_eq!(r["privileges"], json!(["read"]));
    let (_, r) = mapped(json!({ "event": "delegation_rejected", "user": "alice", "agent": {} }));
    assert_eq!((r["class_uid"].as_u64(), r["status_id"].as_u64()), (Some(3005), Some(2)));
}

#[test]
fn revocations_are_account_changes() {
    let rule =
        json!({ "id": "r-1234", "spiffe_id": "spiffe://example.org/agent", "reason": "leaked", "source": "runtime" });
    let (_, r) = mapped(json!({ "event": "revoked", "rule": rule, "by": { "uid": 0, "pid": 5 }, "matched_now": 1 }));
    assert_eq!((r["class_uid"].as_u64(), r["activity_id"].as_u64()), (Some(3001), Some(5)));
    assert_eq!(r["user"], json!({ "name": "spiffe://example.org/agent", "uid": "r-1234" }));
    assert_eq!(r["actor"]["process"]["pid"], 5);
    let (_, r) = mapped(json!({ "event": "revocation_lifted", "rule": rule, "by": { "uid": 0, "pid": null } }));
    assert_eq!((r["class_uid"].as_u64(), r["activity_id"].as_u64()), (Some(3001), Some(2)));
}

#[test]
fn gateway_and_guard_are_api_activity() {
    let (_, r) = mapped(json!({ "event": "gateway_call", "agent": "spiffe://example.org/agent", "pid": 3, "uid": 1000,
        "route": "openai", "method": "POST", "host": "api.openai.com", "path": "/v1/chat", "status": 200,
        "decision": "allow", "policy_decision": "allow", "policies": ["permit-openai"] }));
    assert_eq!(
        (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["status_id"].as_u64()),
        (Some(6003), Some(1), Some(1))
    );
    assert_eq!(r["api"]["operation"], "POST");
    assert_eq!(r["api"]["service"]["name"], "openai");
    assert_eq!(r["http_response"]["code"], 200);
    assert_eq!(r["dst_endpoint"]["hostname"], "api.openai.com");
    assert_eq!(r["actor"]["authorizations"][0]["policy"]["name"], "permit-openai");
    let (_, r) = mapped(json!({ "event": "guard_action", "guard": "mcp", "source": "127.0.0.1:5555", "method": "POST",
        "mcp_method": "tools/call", "tool": "delete_repo", "decision": "deny", "status": 403 }));
    assert_eq!((r["class_uid"].as_u64(), r["status_id"].as_u64()), (Some(6003), Some(2)));
    assert_eq!(r["api"]["operation"], "tools/call delete_repo");
    assert_eq!(r["src_endpoint"], json!({ "ip": "127.0.0.1", "port": 5555 }));
    let (_, r) = mapped(json!({ "event": "gateway_call", "method": "CONNECT", "decision": "allow" }));
    assert_eq!(r["activity_id"], 99);
}

#[test]
fn anomalies_are_detection_findings() {
    let (_, r) = mapped(json!({ "event": "anomaly", "kind": "new_audience", "agent": "spiffe://example.org/agent" }));
    assert_eq!(
        (r["class_uid"].as_u64(), r["activity_id"].as_u64(), r["severity_id"].as_u64()),
        (Some(2004), Some(1), Some(4))
    );
    assert_eq!(r["finding_info"]["types"], json!(["new_audience"]));
    assert_eq!(r["finding_info"]["uid"], "tessera-anomaly-7");
}

#[test]
fn anything_else_is_a_base_event_never_dropped() {
    for event in ["started", "drift", "withdrawn", "audit_rotated", "admin_refused", "something_new"] {
        let (_, r) = mapped(json!({ "event": event }));
        assert_eq!((r["class_uid"].as_u64(), r["type_uid"].as_u64()), (Some(0), Some(99)));
        assert_eq!(r["metadata"]["event_code"], event);
    }
    let r = map_line("not json {");
    check_required(&r);
    assert_eq!(r["raw_data"], "not json {");
    assert_eq!(r["metadata"]["uid"], line_hash("not json {"));
    assert_eq!(r["time"], 0);
}
