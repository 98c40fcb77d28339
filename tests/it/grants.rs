//! Live grants (issue 25, part 1): a python agent that got a delegated token through the token
//! socket and stays alive is a workload in `tessera inventory`, its grant is listed under GRANTS
//! with every field, and `tessera revoke` counts and names it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a failure is the test failing")]

use crate::common::*;
use crate::delegation::{FLIGHTS, exchange_form, setup, wait_audit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Start the lingering agent with `body`: (the child, keeping its stdin open; status; answer).
fn linger(s: &crate::delegation::Setup, body: &str) -> (Child, u16, Value) {
    let mut child = Command::new(PYTHON)
        .env_remove("LD_LIBRARY_PATH")
        .arg(&s.lingerer)
        .arg(&s.token_sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(body.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut status, mut answer) = (String::new(), String::new());
    out.read_line(&mut status).unwrap();
    out.read_line(&mut answer).unwrap();
    (child, status.trim().parse().unwrap(), serde_json::from_str(answer.trim()).unwrap_or(Value::Null))
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn admin(s: &crate::delegation::Setup, args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).arg("--admin-socket").arg(&s.admin_sock).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_token_socket_agent_is_a_workload_its_grant_is_listed_and_revoke_names_it() {
    let Some(s) = setup() else { return };
    let alice = s.idp.alice("flight:search");
    let (mut child, status, body) = linger(&s, &exchange_form(&alice, FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let c = claims(token);
    let jti = c["jti"].as_str().unwrap().to_owned();
    let pid = child.id() as i64;
    let agent = format!("spiffe://{TD}/agents/lingerer");

    let doc: Value = serde_json::from_str(&admin(&s, &["inventory", "--json"])).unwrap();
    let grants = doc["grants"].as_array().unwrap();
    let g = grants.iter().find(|g| g["jti"] == jti.as_str()).unwrap_or_else(|| panic!("{grants:?}"));
    assert_eq!(g["agent"], agent.as_str());
    assert_eq!(g["owner"], "travel-team");
    assert_eq!(g["pid"], pid);
    assert_eq!(g["user"], "alice");
    assert_eq!(g["act_chain"], serde_json::json!([agent]));
    assert_eq!(g["scope"], serde_json::json!(["flight:search"]));
    assert_eq!(g["audience"], FLIGHTS);
    assert_eq!(g["expires_at"], c["exp"]);
    assert!(g["authorization_details"].is_null() && g["approval"].is_null(), "{g}");
    assert!(g["issued_at"].as_u64().unwrap() <= g["expires_at"].as_u64().unwrap());
    // The agent holds no SVID, only the token: it is a workload all the same.
    let w = doc["workloads"].as_array().unwrap().iter().find(|w| w["pid"] == pid).expect("the agent is a workload");
    let held = &w["identities"][0];
    assert_eq!((held["kind"].as_str(), held["spiffe_id"].as_str()), (Some("delegated"), Some(agent.as_str())), "{w}");
    assert_eq!(held["owner"], "travel-team");

    let text = admin(&s, &["inventory"]);
    assert!(text.contains("GRANTS (1)") && text.contains(&jti) && text.contains("user alice"), "{text}");
    assert!(!text.contains(token), "the inventory never shows a token");

    let out = admin(&s, &["revoke", "--spiffe-id", &agent, "--reason", "grants test"]);
    assert!(out.contains("cuts off 1 running workload") && out.contains("ends 1 live grant"), "{out}");
    assert!(out.contains(&format!("pid {pid}")) && out.contains(&format!("delegated {agent}")), "{out}");
    let revoked = wait_audit(&s, "revoked", 1);
    let m = &revoked[0]["matched_now"];
    assert_eq!(m["workloads"], serde_json::json!([pid]), "{m}");
    assert_eq!(m["grants"], serde_json::json!([jti]), "{m}");
    assert_eq!(m["holders"][0]["held"], serde_json::json!([format!("delegated {agent}")]), "{m}");
    assert!(!s.d.audit_text().contains(token), "no token in the audit log");
    drop(child.stdin.take());
    child.wait().unwrap();
}
