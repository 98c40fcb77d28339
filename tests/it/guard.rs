//! Guards (`[[guard]]`) end to end: the real daemon with Cedar policies, a plain-HTTP upstream
//! written here (hyper) that records what reached it and answers MCP `tools/list` (JSON or
//! server-sent events) and `tools/call`, curl as the client (attested as the agent on the token
//! socket for its delegated token), and the test process's own JWT-SVID. Covers: an allowed
//! request forwarded without the token, a denied one 403 naming the policy, bad tokens 401, MCP
//! tools/call decided per tool, tools/list filtered, header/body disagreement and JSON tricks
//! refused, and the guard_action audit lines. (The Python MCP SDK runs in `interop/guard.sh`.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a failure is the test failing")]

use crate::common::*;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod mtls;

const CURL: &str = "/usr/bin/curl";
const AGENT: &str = "spiffe://test.example/agent";
const IDP: &str = "https://idp.test";
const ISSUER: &str = "https://tessera.test";
const API_AUD: &str = "https://api.flights.example";
const MCP_AUD: &str = "https://mcp.flights.example";

const POLICIES: &str = r#"
// The other decision points of this node: open (this test is about the guard).
@id("node-open")
permit(principal, action in [Action::"fetch_x509", Action::"fetch_jwt", Action::"delegate", Action::"call"], resource);

@id("api-read")
permit(principal, action == Action::"serve", resource == Guard::"api") when { context.method == "GET" };

@id("no-admin")
forbid(principal, action == Action::"serve", resource == Guard::"api") when { context.path like "/admin*" };

@id("mcp-session")
permit(principal, action == Action::"serve", resource == Guard::"mcp");

@id("search-free")
permit(principal, action == Action::"serve", resource == Tool::"search_flights");

@id("purchase-with-booking-scope")
permit(principal, action == Action::"serve", resource == Tool::"purchase_flight")
  when { context has user && context.scopes.contains("booking:create") };

@id("never-cancel")
forbid(principal, action == Action::"serve", resource == Tool::"cancel_flight");
"#;

// ---------------------------------------------------------------------------------------------
// The upstream: plain HTTP, records every request.

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn respond(ctype: &str, body: String) -> hyper::Response<UpBody> {
    hyper::Response::builder()
        .header("content-type", ctype)
        .body(http_body_util::Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync())
        .unwrap()
}

async fn serve(
    req: hyper::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<UpBody>, std::io::Error> {
    let path = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = req.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    seen.lock().unwrap().push(Seen { path: path.clone(), headers: headers.clone(), body: body.clone() });
    if !path.starts_with("/mcp") {
        return Ok(respond("application/json", json!({ "path": path, "headers": headers }).to_string()));
    }
    let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let result = match msg["method"].as_str() {
        Some("tools/list") => json!({ "tools": [
            { "name": "search_flights", "inputSchema": { "type": "object" } },
            { "name": "purchase_flight", "inputSchema": { "type": "object" } },
            { "name": "cancel_flight", "inputSchema": { "type": "object" } } ] }),
        Some("tools/call") => {
            json!({ "content": [{ "type": "text", "text": format!("ran {}", msg["params"]["name"]) }] })
        }
        _ => json!({}),
    };
    let answer = json!({ "jsonrpc": "2.0", "id": msg["id"], "result": result }).to_string();
    if path.contains("sse=1") {
        // A notification first, then the answer, in CRLF lines.
        let text = format!(
            "event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nevent: message\r\nid: 1\r\ndata: {answer}\r\n\r\n"
        );
        return Ok(respond("text/event-stream", text));
    }
    Ok(respond("application/json", answer))
}

impl Upstream {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { port, seen, _rt: rt }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

struct Setup {
    d: Daemon,
    up: Upstream,
    api: u16,
    mcp_sock: PathBuf,
    token_sock: PathBuf,
    idp_key: rcgen::KeyPair,
    _files: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    setup_with("", "")
}

/// The daemon with `extra` config (more guards, entries) and `extra_policies`.
fn setup_with(extra: &str, extra_policies: &str) -> Option<Setup> {
    if !Path::new(CURL).exists() {
        eprintln!("SKIP: needs {CURL}");
        return None;
    }
    let files = tempfile::tempdir().unwrap();
    let idp_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = idp_key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                      "kid": "idp-1", "use": "sig", "alg": "ES256" });
    let jwks = files.path().join("idp-jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).unwrap();
    let policy = files.path().join("guard.cedar");
    std::fs::write(&policy, format!("{POLICIES}\n{extra_policies}")).unwrap();
    let up = Upstream::start();
    let extra = extra.replace("{UP}", &up.port.to_string());
    let api = free_port();
    let mcp_sock = files.path().join("mcp-guard.sock");
    let mut d = Daemon::configure(&format!(
        r#"jwt_issuer = "{ISSUER}"
audit_refusals_per_minute = 100000

[[delegation.issuers]]
issuer = "{IDP}"
jwks_path = "{jwks}"
audience = "tessera"

[policy]
files = ["{policy}"]

[[guard]]
name = "api"
listen = "127.0.0.1:{api}"
upstream = "http://127.0.0.1:{up}"
audience = "{API_AUD}"

[[guard]]
name = "mcp"
socket_path = "{mcp}"
upstream = "http://127.0.0.1:{up}"
audience = "{MCP_AUD}"
mcp = true
max_request_body = 4096

[[entries]]
spiffe_id = "{AGENT}"
selectors = ["{sel}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search"]
audiences = ["{API_AUD}", "{MCP_AUD}", "https://other.example"]
{extra}
"#,
        jwks = jwks.display(),
        policy = policy.display(),
        up = up.port,
        mcp = mcp_sock.display(),
        sel = uid_sel(),
    ));
    d.spawn();
    let token_sock = d.dir.path().join("token.sock");
    eventually("the guards and the token socket", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", api)).is_ok()
            && UnixStream::connect(&mcp_sock).is_ok()
            && UnixStream::connect(&token_sock).is_ok()
    });
    Some(Setup { d, up, api, mcp_sock, token_sock, idp_key, _files: files })
}

impl Setup {
    fn alice(&self) -> String {
        let now = now_unix();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("idp-1".into());
        let claims = json!({ "iss": IDP, "sub": "alice", "aud": "tessera", "iat": now, "exp": now + 600,
                             "scope": "flight:search" });
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&self.idp_key.serialize_der()))
            .unwrap()
    }

    /// A delegated token for curl (attested as the agent) from the token socket.
    fn delegated(&self, audience: &str) -> String {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
            .append_pair("subject_token", &self.alice())
            .append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
            .append_pair("audience", audience)
            .append_pair("scope", "flight:search")
            .finish();
        let sock = self.token_sock.display().to_string();
        let ctype = "Content-Type: application/x-www-form-urlencoded";
        let (status, body, _) =
            curl(&["--unix-socket", &sock, "-H", ctype, "--data-binary", &form, "http://localhost/token"]);
        assert_eq!(status, 200, "{body}");
        json_of(&body)["access_token"].as_str().unwrap().to_owned()
    }

    fn api(&self, path: &str, args: &[&str]) -> (u16, String, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.api);
        let mut all: Vec<&str> = args.to_vec();
        all.push(&url);
        curl(&all)
    }

    /// POST a JSON-RPC body to the MCP guard with these extra headers.
    fn mcp(&self, token: &str, body: &str, headers: &[&str], query: &str) -> (u16, String, String) {
        let sock = self.mcp_sock.display().to_string();
        let auth = format!("Authorization: Bearer {token}");
        let url = format!("http://localhost/mcp{query}");
        let mut args = vec!["--unix-socket", &sock, "-H", &auth, "-H", "Content-Type: application/json"];
        args.extend(["-H", "Accept: application/json, text/event-stream"]);
        for h in headers {
            args.extend(["-H", h]);
        }
        args.extend(["--data-binary", body, &url]);
        curl(&args)
    }

    fn actions(&self) -> Vec<Value> {
        self.d.audit_events("guard_action")
    }

    fn wait_action(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        eventually(&format!("guard_action: {what}"), Duration::from_secs(10), || {
            found = self.actions().into_iter().find(|v| pred(v));
            found.is_some()
        });
        found.unwrap()
    }
}

/// curl without proxies from the environment, headers included: (status, body, headers).
fn curl(args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new(CURL)
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", "-D"])
        .arg(&head)
        .args(args)
        .env_remove("http_proxy")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let headers = std::fs::read_to_string(head).unwrap_or_default().to_ascii_lowercase();
    if !out.status.success() {
        eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (code.trim().parse().unwrap_or(0), body.to_owned(), headers)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn call(id: u32, tool: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": tool, "arguments": {} } })
        .to_string()
}

// ---------------------------------------------------------------------------------------------

/// Plain HTTP guard: allowed, denied by a forbid (403 naming it), denied by default, and the
/// token never reaches the upstream; a JWT-SVID works too.
#[test]
fn allowed_requests_are_forwarded_without_the_token_and_denied_ones_name_the_policy() {
    let Some(s) = setup() else { return };
    let token = s.delegated(API_AUD);
    let auth = format!("Authorization: Bearer {token}");
    let (status, body, _) = s.api("/flights?from=CDG", &["-H", &auth, "-H", "X-Tessera-User: mallory"]);
    assert_eq!(status, 200, "{body} {}", s.d.log());
    let seen = s.up.seen();
    let got = seen.iter().find(|r| r.path == "/flights?from=CDG").expect("forwarded");
    let header = |n: &str| got.headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    assert!(header("authorization").is_empty(), "the token went upstream: {got:?}");
    assert_eq!(header("x-tessera-agent"), [AGENT]);
    assert_eq!(header("x-tessera-user"), ["alice"], "the caller's own x-tessera-user is dropped");
    let line = s.wait_action("allowed", |v| v["path"] == "/flights" && v["decision"] == "allow");
    assert_eq!(
        (line["guard"].as_str(), line["agent"].as_str(), line["user"].as_str()),
        (Some("api"), Some(AGENT), Some("alice"))
    );
    assert_eq!((line["token"].as_str(), line["status"].as_u64()), (Some("delegated"), Some(200)), "{line}");
    assert_eq!(
        (line["policy_decision"].as_str(), line["policies"].clone()),
        (Some("allow"), json!(["api-read"])),
        "{line}"
    );
    assert_eq!((line["act"].clone(), line["scopes"].clone()), (json!([AGENT]), json!(["flight:search"])), "{line}");

    // A forbid: 403 with the policy's id.
    let (status, body, _) = s.api("/admin/users", &["-H", &auth]);
    assert_eq!(status, 403, "{body}");
    let v = json_of(&body);
    assert_eq!((v["error"].as_str(), v["policies"].clone()), (Some("forbidden"), json!(["no-admin"])), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("no-admin"), "{v}");
    // No policy permits a POST.
    let (status, body, _) = s.api("/flights", &["-H", &auth, "--data", "x=1"]);
    assert_eq!(status, 403, "{body}");
    assert!(json_of(&body)["reason"].as_str().unwrap().contains("no policy permits"), "{body}");
    let line = s.wait_action("denied", |v| v["path"] == "/admin/users");
    assert_eq!(
        (line["decision"].as_str(), line["policy_decision"].as_str(), line["status"].as_u64()),
        (Some("deny"), Some("deny"), Some(403))
    );
    assert!(
        !s.up.seen().iter().any(|r| r.path.starts_with("/admin") || r.body == "x=1"),
        "a denied request reached the upstream"
    );

    // A JWT-SVID of the test process (the same entry) for the guard's audience.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svid = rt.block_on(async { s.d.client().await.fetch_jwt_token([API_AUD], None).await.unwrap() }).to_string();
    let (status, body, _) = s.api("/by-svid", &["-H", &format!("Authorization: Bearer {svid}")]);
    assert_eq!(status, 200, "{body}");
    let line = s.wait_action("svid", |v| v["path"] == "/by-svid");
    assert_eq!(
        (line["token"].as_str(), line["agent"].as_str(), line["user"].clone()),
        (Some("jwt_svid"), Some(AGENT), Value::Null)
    );
    let sig = token.split('.').nth(2).unwrap();
    assert!(!s.d.audit_text().contains(sig) && !s.d.log().contains(sig), "a token leaked");
}

/// Forged, foreign, wrong-audience and missing tokens are 401 with a Bearer challenge; two
/// Authorization headers are 400; none reaches the upstream.
#[test]
fn bad_tokens_are_401_with_a_bearer_challenge() {
    let Some(s) = setup() else { return };
    let good = s.delegated(API_AUD);
    let other = s.delegated("https://other.example");
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["sub"] = "mallory".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    let before = s.up.seen().len();
    for (what, token) in [
        ("forged", forged.as_str()),
        ("foreign (the IdP's own)", &s.alice()),
        ("wrong audience", &other),
        ("garbage", "a.b.c"),
    ] {
        let (status, body, headers) =
            s.api(&format!("/t/{}", what.len()), &["-H", &format!("Authorization: Bearer {token}")]);
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(json_of(&body)["error"], "invalid_token", "{what}: {body}");
        assert!(headers.contains("www-authenticate: bearer error=\"invalid_token\""), "{what}: {headers}");
    }
    let (status, _, headers) = s.api("/none", &[]);
    assert_eq!(status, 401);
    assert!(headers.contains("www-authenticate: bearer realm="), "{headers}");
    let (status, body, _) = s
        .api("/two", &["-H", &format!("Authorization: Bearer {good}"), "-H", &format!("Authorization: Bearer {good}")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.up.seen().len(), before, "a refused request reached the upstream");
    let line = s.wait_action("no token", |v| v["path"] == "/none");
    assert_eq!(
        (line["decision"].as_str(), line["status"].as_u64(), line["agent"].clone()),
        (Some("deny"), Some(401), Value::Null)
    );
    // Revoked: the agent's tokens are refused at once.
    let out = Command::new(bin())
        .args(["revoke", "--spiffe-id", AGENT, "--reason", "test", "--admin-socket"])
        .arg(s.d.admin_socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body, _) = s.api("/after-revoke", &["-H", &format!("Authorization: Bearer {good}")]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
}

/// MCP: tools/call decided per tool (JSON-RPC error for a denied one), tools/list filtered in
/// JSON and in server-sent events, headers that disagree with the body and JSON tricks refused.
#[test]
fn mcp_tools_are_decided_per_tool_and_listed_only_when_callable() {
    let Some(s) = setup() else { return };
    let token = s.delegated(MCP_AUD);
    let (status, body, _) =
        s.mcp(&token, &call(1, "search_flights"), &["Mcp-Method: tools/call", "Mcp-Name: search_flights"], "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["result"]["content"][0]["text"], "ran \"search_flights\"", "{body}");
    for (id, tool, policies) in [(2, "purchase_flight", json!([])), (3, "cancel_flight", json!(["never-cancel"]))] {
        let (status, body, _) = s.mcp(&token, &call(id, tool), &[], "");
        assert_eq!(status, 200, "{body}");
        let v = json_of(&body);
        assert_eq!((v["id"].as_u64(), v["error"]["code"].as_i64()), (Some(u64::from(id)), Some(-32003)), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(tool), "{v}");
        assert_eq!(v["error"]["data"]["policies"], policies, "{v}");
        let line = s.wait_action(tool, |v| v["tool"] == tool);
        assert_eq!(
            (line["decision"].as_str(), line["mcp_method"].as_str(), line["policies"].clone()),
            (Some("deny"), Some("tools/call"), policies)
        );
    }
    assert!(
        !s.up.seen().iter().any(|r| r.body.contains("purchase_flight") || r.body.contains("cancel_flight")),
        "a denied tool ran"
    );

    let list = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list" }).to_string();
    for query in ["", "?sse=1"] {
        let (status, body, headers) = s.mcp(&token, &list, &["Mcp-Method: tools/list"], query);
        assert_eq!(status, 200, "{body}");
        let answer = if query.is_empty() {
            json_of(&body)
        } else {
            assert!(headers.contains("text/event-stream"), "{headers}");
            assert!(body.contains("notifications/progress"), "other events pass: {body}");
            let data = body.lines().filter_map(|l| l.strip_prefix("data: ")).find(|d| d.contains("tools")).unwrap();
            json_of(data)
        };
        let names: Vec<&str> =
            answer["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["search_flights"], "{query}: {body}");
    }
    let line = s.wait_action("tools/list", |v| v["mcp_method"] == "tools/list");
    assert_eq!(line["tools_hidden"], json!(["purchase_flight", "cancel_flight"]), "{line}");
    assert_eq!(line["policies"], json!(["mcp-session"]), "{line}");

    // The headers must agree with the body (base64 form decoded); JSON tricks are refused.
    let b64 = format!("Mcp-Name: =?base64?{}?=", base64::engine::general_purpose::STANDARD.encode("search_flights"));
    let (status, body, _) = s.mcp(&token, &call(4, "search_flights"), &[&b64], "");
    assert_eq!(status, 200, "{body}");
    let before = s.up.seen().len();
    let bad: Vec<(&str, String, Vec<&str>, i64)> = vec![
        ("name header", call(5, "purchase_flight"), vec!["Mcp-Name: search_flights"], -32020),
        ("method header", call(6, "search_flights"), vec!["Mcp-Method: tools/list"], -32020),
        ("bad base64", call(7, "search_flights"), vec!["Mcp-Name: =?base64?%%%?=", ], -32020),
        ("duplicate key", r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"search_flights","name":"purchase_flight"}}"#.into(), vec![], -32700),
        ("escaped duplicate", r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"search_flights","na\u006de":"purchase_flight"}}"#.into(), vec![], -32700),
        ("batch", format!("[{}]", call(9, "purchase_flight")), vec![], -32600),
        ("case", call(10, "purchase_flight").replace("tools/call", "Tools/Call"), vec![], -32600),
        ("not JSON-RPC", "hello".into(), vec![], -32700),
        ("no jsonrpc", r#"{"id":1,"method":"tools/call","params":{"name":"purchase_flight"}}"#.into(), vec![], -32600),
        ("name not a string", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["purchase_flight"]}}"#.into(), vec![], -32602),
    ];
    for (what, body, headers, code) in bad {
        let (status, answer, _) = s.mcp(&token, &body, &headers, "");
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(json_of(&answer)["error"]["code"].as_i64(), Some(code), "{what}: {answer}");
    }
    let (status, _, _) = s.mcp(&token, &format!("{{\"x\":\"{}\"}}", "a".repeat(5000)), &[], "");
    assert_eq!(status, 413);
    assert_eq!(s.up.seen().len(), before, "a refused message reached the upstream");
    // A token for the other guard's audience is not one for this guard.
    let api_token = s.delegated(API_AUD);
    let (status, _, _) = s.mcp(&api_token, &call(11, "search_flights"), &[], "");
    assert_eq!(status, 401);
}
