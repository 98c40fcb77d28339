//! RFC 9396 `authorization_details` in the token exchange and the user's own approval, end to
//! end: the real daemon, python agents attested by script digest, a test identity provider, a
//! webhook receiver (a plain TCP listener in this test) for `[approvals] notify_url`, and the
//! `[approvals] listen` socket spoken to with the users' IdP tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a failure is the test failing")]

use crate::common::*;
use crate::delegation::{DELEGATION_ISSUER, FLIGHTS, GRANT, IDP, ISSUER, Idp, JWT_TYPE, agent_script, form};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FLIGHT: &str = r#"[{"type":"flight_booking","itinerary":"LHR-JFK 2025-06-01","amount":500,"currency":"EUR"}]"#;

struct Setup {
    d: Daemon,
    idp: Idp,
    travel: PathBuf,
    plain: PathBuf,
    token_sock: PathBuf,
    /// The `[approvals] listen` port.
    listen: u16,
    /// Bodies POSTed to the webhook.
    hooks: mpsc::Receiver<Value>,
}

/// A webhook receiver: answers each request 200 and sends its JSON body on. The first
/// `fail_first` requests are answered 503 (the daemon must retry).
fn webhook(fail_first: usize) -> (u16, mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            seen += 1;
            let status = if seen <= fail_first { "503 Service Unavailable" } else { "200 OK" };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
            if seen > fail_first {
                let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                v["_head"] = head.into();
                let _ = tx.send(v);
            }
        }
    });
    (port, rx)
}

fn setup() -> Option<Setup> {
    setup_with("")
}

/// `setup`, with `policies` (Cedar) in force under `[policy]` when not empty.
fn setup_with(policies: &str) -> Option<Setup> {
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIP: needs {PYTHON}");
        return None;
    }
    let scripts = tempfile::tempdir().unwrap().keep();
    std::fs::set_permissions(&scripts, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let idp = Idp::new(&scripts);
    let travel = agent_script(&scripts, "travel");
    let plain = agent_script(&scripts, "plain-details");
    let (hook_port, hooks) = webhook(1);
    let listen = free_port();
    let digest = |p: &Path| sha256_hex(&std::fs::read(p).unwrap());
    let u = uid();
    let toml = format!(
        r#"jwt_issuer = "{ISSUER}"
audit_refusals_per_minute = 1000

[[delegation.issuers]]
issuer = "{IDP}"
jwks_path = "{jwks}"
audience = "tessera"

[[delegation.authorization_details]]
type = "flight_booking"
fields = {{ itinerary = "String", amount = "Long", currency = "String" }}

[[delegation.authorization_details]]
type = "hotel"
fields = {{ nights = "Long", refundable = "Bool", rooms = "Set<String>" }}

[approvals]
notify_url = "http://127.0.0.1:{hook_port}/hooks/tessera"
listen = "127.0.0.1:{listen}"

[[entries]]
spiffe_id = "spiffe://{TD}/agents/travel"
selectors = ["unix:uid:{u}", "script:sha256:{t}"]
owner = "team-travel"
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search", "booking:create"]
audiences = ["{FLIGHTS}"]
approval = ["booking:create"]
authorization_details = ["flight_booking"]

# Delegation, but no authorization_details types.
[[entries]]
spiffe_id = "spiffe://{TD}/agents/plain-details"
selectors = ["unix:uid:{u}", "script:sha256:{p}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search"]
audiences = ["{FLIGHTS}"]
"#,
        jwks = idp.jwks.display(),
        t = digest(&travel),
        p = digest(&plain),
    );
    let toml = if policies.is_empty() {
        toml
    } else {
        let file = scripts.join("policy.cedar");
        std::fs::write(&file, policies).unwrap();
        format!("{toml}\n[policy]\nfiles = [\"{}\"]\n", file.display())
    };
    let d = Daemon::start(&toml);
    let token_sock = d.dir.path().join("token.sock");
    eventually("token socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&token_sock).is_ok()
    });
    eventually("approvals listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    });
    Some(Setup { d, idp, travel, plain, token_sock, listen, hooks })
}

/// A user's IdP token for tessera (`jti` makes each one its own).
fn user_token(s: &Setup, sub: &str, scope: &str) -> String {
    let now = now_unix();
    s.idp.sign(&json!({ "iss": IDP, "sub": sub, "aud": "tessera", "iat": now, "exp": now + 600,
                        "scope": scope, "jti": format!("{sub}-{}", rand_suffix()) }))
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn exchange_form(subject: &str, scope: &str, details: Option<&str>) -> String {
    let mut pairs = vec![
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", JWT_TYPE),
        ("audience", FLIGHTS),
        ("scope", scope),
    ];
    if let Some(d) = details {
        pairs.push(("authorization_details", d));
    }
    form(&pairs)
}

/// Run a python agent with `body` on stdin: (status, JSON answer).
fn py_exchange(s: &Setup, agent: &Path, body: &str) -> (u16, Value) {
    let mut child = Command::new(PYTHON)
        .env_remove("LD_LIBRARY_PATH")
        .arg(agent)
        .arg(&s.token_sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(body.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or_else(|| panic!("agent output {text:?} {:?}", out.stderr));
    (status.trim().parse().unwrap(), serde_json::from_str(body.trim()).unwrap_or(Value::Null))
}

/// The claims of an issued token (verified against the token socket's JWKS).
fn claims(s: &Setup, token: &str) -> Value {
    let out = Command::new("/usr/bin/curl")
        .args(["-s", "--unix-socket"])
        .arg(&s.token_sock)
        .arg("http://localhost/jwks")
        .output()
        .unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&out.stdout).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[FLIGHTS]);
    v.set_issuer(&[DELEGATION_ISSUER]);
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap().claims
}

/// POST to the `[approvals] listen` socket: (status, JSON answer, raw head).
fn decide(s: &Setup, path: &str, bearer: Option<&str>) -> (u16, Value, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.listen)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null), head.to_owned())
}

fn wait_audit(s: &Setup, event: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} {event} lines"), Duration::from_secs(10), || s.d.audit_events(event).len() >= count);
    s.d.audit_events(event)
}

#[test]
fn details_are_checked_and_carried_in_the_token() {
    let Some(s) = setup() else { return };
    let alice = user_token(&s, "alice", "flight:search booking:create");
    let (status, body) = py_exchange(&s, &s.travel, &exchange_form(&alice, "flight:search", Some(FLIGHT)));
    assert_eq!(status, 200, "{body}");
    let requested: Value = serde_json::from_str(FLIGHT).unwrap();
    assert_eq!(body["authorization_details"], requested, "RFC 9396 §7: the response returns them");
    let c = claims(&s, body["access_token"].as_str().unwrap());
    assert_eq!(c["authorization_details"], requested);
    assert!(c.get("approval").is_none(), "no approval was involved: {c}");
    let granted = wait_audit(&s, "delegation_granted", 1);
    assert_eq!(granted[0]["authorization_details"], requested);
    // Without details: no claim.
    let (status, body) = py_exchange(&s, &s.travel, &exchange_form(&alice, "flight:search", None));
    assert_eq!(status, 200, "{body}");
    assert!(claims(&s, body["access_token"].as_str().unwrap()).get("authorization_details").is_none());

    let ten_mb = format!(r#"[{{"type":"flight_booking","itinerary":"{}"}}]"#, "x".repeat(10 << 20));
    let cases: Vec<(&str, &Path, String)> = vec![
        ("not JSON", &s.travel, "[{".into()),
        ("not an array", &s.travel, r#"{"type":"flight_booking"}"#.into()),
        ("10 MB long", &s.travel, ten_mb),
        ("over 16 KiB", &s.travel, format!(r#"[{{"type":"flight_booking","itinerary":"{}"}}]"#, "x".repeat(17 << 10))),
        ("undeclared type", &s.travel, r#"[{"type":"car_rental","days":2}]"#.into()),
        ("undeclared field", &s.travel, FLIGHT.replace(r#""currency""#, r#""seat":"1A","currency""#)),
        ("wrong field type", &s.travel, FLIGHT.replace("500", r#""500""#)),
        ("a missing field", &s.travel, FLIGHT.replace(r#","currency":"EUR""#, "")),
        ("a type twice", &s.travel, format!("[{0},{0}]", &FLIGHT[1..FLIGHT.len() - 1])),
        (
            "a declared type the entry does not list",
            &s.travel,
            r#"[{"type":"hotel","nights":2,"refundable":true,"rooms":["double"]}]"#.into(),
        ),
        ("an entry that lists no types", &s.plain, FLIGHT.into()),
    ];
    let mut refused = s.d.audit_events("delegation_refused").len();
    for (name, agent, details) in cases {
        let (status, answer) = py_exchange(&s, agent, &exchange_form(&alice, "flight:search", Some(&details)));
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_authorization_details")),
            "{name}: {answer}"
        );
        assert!(answer.get("access_token").is_none(), "{name}");
        eprintln!("{name}: {}", answer["error_description"]);
        refused += 1;
        let line = wait_audit(&s, "delegation_refused", refused).pop().unwrap();
        assert_eq!(line["error"], "invalid_authorization_details", "{name}: {line}");
        assert!(line["agent"]["pid"].is_number(), "{name}: {line}");
    }
    // The daemon is unharmed and nothing of the 10 MB went to the audit log.
    let (status, body) = py_exchange(&s, &s.travel, &exchange_form(&alice, "flight:search", Some(FLIGHT)));
    assert_eq!(status, 200, "{body}");
    assert!(!s.d.audit_text().contains(&"x".repeat(4096)));
}

#[test]
fn the_user_approves_these_exact_details_with_their_own_token() {
    let Some(s) = setup() else { return };
    let alice = user_token(&s, "alice", "flight:search booking:create");
    let ask = exchange_form(&alice, "booking:create", Some(FLIGHT));
    let (status, pending) = py_exchange(&s, &s.travel, &ask);
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let requested: Value = serde_json::from_str(FLIGHT).unwrap();

    // The webhook hears of it (after one 503, retried) with the pending approval's JSON.
    let hook = s.hooks.recv_timeout(Duration::from_secs(15)).expect("webhook called");
    assert!(hook["_head"].as_str().unwrap().starts_with("POST /hooks/tessera "), "{hook}");
    assert_eq!(hook["approval_id"], id.as_str());
    assert_eq!(hook["agent"], format!("spiffe://{TD}/agents/travel"));
    assert_eq!(hook["owner"], "team-travel");
    assert_eq!(hook["user"], "alice");
    assert_eq!(hook["scope"], json!(["booking:create"]));
    assert_eq!(hook["audience"], FLIGHTS);
    assert_eq!(hook["authorization_details"], requested);
    assert!(hook["expires_at"].as_u64().unwrap() > now_unix());
    assert!(!hook.to_string().contains(alice.split('.').nth(2).unwrap()), "no token in the webhook");

    // `tessera approvals` shows the details it binds to.
    let out = Command::new(bin()).arg("approvals").arg("--admin-socket").arg(s.d.admin_socket()).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id) && listed.contains(r#""amount":500"#), "{listed}");

    // Refused deciders: no token, a bad one, another user's, the agent's own subject token.
    let approve = format!("/approvals/{id}/approve");
    let (status, answer, head) = decide(&s, &approve, None);
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_token")), "{answer}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    let (status, answer, _) = decide(&s, &approve, Some("not.a.token"));
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_token")), "{answer}");
    let now = now_unix();
    let expired = s.idp.sign(&json!({ "iss": IDP, "sub": "alice", "aud": "tessera", "iat": now - 900,
                                      "exp": now - 300, "scope": "booking:create" }));
    let (status, answer, _) = decide(&s, &approve, Some(&expired));
    assert_eq!((status, answer["error"].as_str()), (401, Some("invalid_token")), "expired token: {answer}");
    let bob = user_token(&s, "bob", "flight:search booking:create");
    let (status, answer, _) = decide(&s, &approve, Some(&bob));
    assert_eq!((status, answer["error"].as_str()), (403, Some("access_denied")), "{answer}");
    let (status, answer, _) = decide(&s, &approve, Some(&alice));
    assert_eq!((status, answer["error"].as_str()), (403, Some("access_denied")), "the agent's token: {answer}");
    // Audit lines are written asynchronously: wait for bob's, not for any refusal.
    eventually("bob's refused decision is audited", Duration::from_secs(5), || {
        s.d.audit_events("delegation_refused").iter().any(|r| r["approval_id"] == id.as_str() && r["approver"] == "bob")
    });

    // Alice decides with a token of her own.
    let alice_phone = user_token(&s, "alice", "openid");
    let (status, decided, _) = decide(&s, &approve, Some(&alice_phone));
    assert_eq!(status, 200, "{decided}");
    assert_eq!((decided["state"].as_str(), decided["approver"].as_str()), (Some("approved"), Some("alice")));
    // Decided once: a replay is refused.
    let (status, answer, _) = decide(&s, &approve, Some(&alice_phone));
    assert_eq!((status, answer["error"].as_str()), (409, Some("already_decided")), "{answer}");

    // The approval is for these details only: other details get no token and leave it be.
    let other = exchange_form(&alice, "booking:create", Some(&FLIGHT.replace("500", "5000")));
    let (status, answer) = py_exchange(&s, &s.travel, &format!("{other}&approval_id={id}"));
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")), "{answer}");
    assert!(answer.get("access_token").is_none());
    let (status, answer) =
        py_exchange(&s, &s.travel, &format!("{}&approval_id={id}", exchange_form(&alice, "booking:create", None)));
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")), "no details: {answer}");

    let (status, granted) = py_exchange(&s, &s.travel, &format!("{ask}&approval_id={id}"));
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["authorization_details"], requested);
    let c = claims(&s, granted["access_token"].as_str().unwrap());
    assert_eq!(c["authorization_details"], requested);
    assert_eq!(c["approval"]["approver"], "alice");
    let approved_at = c["approval"]["approved_at"].as_u64().unwrap();
    assert!(approved_at <= c["iat"].as_u64().unwrap() && approved_at + 60 > c["iat"].as_u64().unwrap(), "{c}");

    // Used: redeeming again, or deciding again, is refused.
    let (status, answer) = py_exchange(&s, &s.travel, &format!("{ask}&approval_id={id}"));
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")), "{answer}");
    let (status, answer, _) = decide(&s, &format!("/approvals/{id}/reject"), Some(&alice_phone));
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")), "{answer}");
    let (status, answer, _) = decide(&s, "/approvals/00112233445566778899aabbccddeeff/approve", Some(&alice_phone));
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")), "{answer}");

    let approved = wait_audit(&s, "delegation_approved", 1);
    assert_eq!(approved[0]["approval_id"], id.as_str());
    assert_eq!(approved[0]["approver"], "alice");
    assert_eq!(approved[0]["approver_uid"], Value::Null);
    assert_eq!(approved[0]["authorization_details"], requested);
    let granted = wait_audit(&s, "delegation_granted", 1);
    let line = granted.iter().find(|g| g["approval_id"] == id.as_str()).unwrap();
    assert_eq!(line["approval"], json!({ "approver": "alice", "approved_at": approved_at }));
    assert_eq!(line["authorization_details"], requested);
    let log = s.d.audit_text();
    for t in [&alice, &alice_phone, &bob] {
        assert!(!log.contains(t.split('.').nth(2).unwrap()), "a token in the audit log");
    }
}

#[test]
fn the_admin_socket_still_approves_and_the_token_says_so() {
    let Some(s) = setup() else { return };
    let alice = user_token(&s, "alice", "booking:create");
    let ask = exchange_form(&alice, "booking:create", Some(FLIGHT));
    let (_, pending) = py_exchange(&s, &s.travel, &ask);
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let out =
        Command::new(bin()).args(["approve", &id]).arg("--admin-socket").arg(s.d.admin_socket()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(r#""amount":500"#),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The user can no longer decide it.
    let (status, answer, _) = decide(&s, &format!("/approvals/{id}/reject"), Some(&user_token(&s, "alice", "x")));
    assert_eq!((status, answer["error"].as_str()), (409, Some("already_decided")), "{answer}");
    let (status, granted) = py_exchange(&s, &s.travel, &format!("{ask}&approval_id={id}"));
    assert_eq!(status, 200, "{granted}");
    let c = claims(&s, granted["access_token"].as_str().unwrap());
    assert_eq!(c["approval"]["approver"], format!("uid:{}", uid()));
    let approved = wait_audit(&s, "delegation_approved", 1);
    assert_eq!(approved[0]["approver"], format!("uid:{}", uid()));
    assert_eq!(approved[0]["approver_uid"], uid());
}

/// `[policy]` decides on the amount of this exact purchase: small ones go through, larger ones
/// wait for a human (`!context.approved`) and are granted once approved, over a cap never.
#[test]
fn policies_decide_on_the_amount_and_wait_for_approval() {
    let policies = r#"
@id("travel-team")
permit (principal, action == Action::"delegate", resource)
  when { principal has owner && principal.owner == "team-travel" };
@id("big-purchase-needs-approval")
forbid (principal, action == Action::"delegate", resource)
  when { context.details has flight_booking && context.details.flight_booking.amount > 300 && !context.approved };
@id("purchase-cap")
forbid (principal, action == Action::"delegate", resource)
  when { context.details has flight_booking && context.details.flight_booking.amount > 1000 };
"#;
    let Some(s) = setup_with(policies) else { return };
    let booking = |amount: u32| {
        format!(r#"[{{"type":"flight_booking","itinerary":"LHR-JFK 2025-06-01","amount":{amount},"currency":"EUR"}}]"#)
    };
    let alice = user_token(&s, "alice", "flight:search");
    let (status, body) = py_exchange(&s, &s.travel, &exchange_form(&alice, "flight:search", Some(&booking(200))));
    assert_eq!(status, 200, "{body}");

    // 500: the policy wants a human's yes for this amount.
    let ask = exchange_form(&alice, "flight:search", Some(&booking(500)));
    let (status, pending) = py_exchange(&s, &s.travel, &ask);
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let out =
        Command::new(bin()).args(["approve", &id]).arg("--admin-socket").arg(s.d.admin_socket()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, granted) = py_exchange(&s, &s.travel, &format!("{ask}&approval_id={id}"));
    assert_eq!(status, 200, "{granted}");
    assert_eq!(claims(&s, granted["access_token"].as_str().unwrap())["authorization_details"][0]["amount"], 500);

    // Over the cap: refused, approved or not.
    let (status, body) = py_exchange(&s, &s.travel, &exchange_form(&alice, "flight:search", Some(&booking(5000))));
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("purchase-cap"), "{body}");

    let granted = wait_audit(&s, "delegation_granted", 2);
    assert!(granted.iter().all(|l| l["policy_decision"] == "allow" && l["policies"] == json!(["travel-team"])));
    assert!(granted.iter().any(|l| l["approval"]["approver"] == format!("uid:{}", uid())));
    let refused = wait_audit(&s, "delegation_refused", 1);
    assert!(refused.iter().any(|l| l["policies"] == json!(["purchase-cap"]) && l["policy_decision"] == "deny"));
}
