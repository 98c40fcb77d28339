//! Delegation end to end: the real daemon, real agent processes attested by script
//! (python3 `script:sha256:`) and binary (`unix:sha256:` of curl) selectors talking RFC 8693 on
//! the token socket, a test identity provider (a locally generated ES256 key and its JWKS file),
//! and the issued tokens verified with `jsonwebtoken` against the JWKS the socket publishes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a failure is the test failing")]

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CURL: &str = "/usr/bin/curl";
pub(crate) const IDP: &str = "https://idp.test";
pub(crate) const ISSUER: &str = "https://tessera.test";
/// The `iss` of delegated tokens: an issuer of their own beside the JWT-SVIDs' `jwt_issuer`.
pub(crate) const DELEGATION_ISSUER: &str = "https://tessera.test/delegation";
pub(crate) const FLIGHTS: &str = "https://api.flights.example";
pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Python's HTTP client over a Unix socket (stdlib only), shared by the agent scripts.
const PY_UNIX_HTTP: &str = r#"import http.client, json, os, socket, sys, time
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=20)
        self.unix_path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix_path)"#;

/// A python3 agent: POSTs the form on stdin to /token over the Unix socket (stdlib only) and
/// prints the status, then the body. `tag` makes each agent's script (and digest) its own.
pub(crate) fn agent_script(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.py"));
    std::fs::write(
        &p,
        format!(
            r#"# agent: {name}
{PY_UNIX_HTTP}
c = Unix(sys.argv[1])
c.request("POST", "/token", body=sys.stdin.buffer.read(), headers={{"Content-Type": "application/x-www-form-urlencoded"}})
r = c.getresponse()
print(r.status)
print(r.read().decode())
"#
        ),
    )
    .unwrap();
    p
}

/// A python3 agent that stays alive after its exchange: reads one form line from stdin, POSTs it
/// to /token, prints the status and the body, then waits for its stdin to close.
pub(crate) fn lingerer_script(dir: &Path) -> PathBuf {
    let p = dir.join("lingerer.py");
    std::fs::write(
        &p,
        format!(
            r#"# agent: lingerer
{PY_UNIX_HTTP}
c = Unix(sys.argv[1])
c.request("POST", "/token", body=sys.stdin.buffer.readline().strip(), headers={{"Content-Type": "application/x-www-form-urlencoded"}})
r = c.getresponse()
print(r.status)
print(r.read().decode(), flush=True)
sys.stdin.buffer.read()
"#
        ),
    )
    .unwrap();
    p
}

/// A python3 agent that keeps one connection: two exchanges on it, then it forks; the parent
/// (the process that connected) execs the same interpreter on `idle.py` (a script with no entry;
/// it waits for the child), and the child, once the parent's command line shows the exec, sends a
/// third exchange on the inherited connection. Prints the three (status, body) as JSON.
fn keeper_script(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("idle.py"), "import os\nos.wait()\n").unwrap();
    let p = dir.join("keeper.py");
    std::fs::write(
        &p,
        format!(
            r#"{PY_UNIX_HTTP}
c = Unix(sys.argv[1])
form = sys.stdin.buffer.read()
def ask():
    c.request("POST", "/token", body=form, headers={{"Content-Type": "application/x-www-form-urlencoded"}})
    r = c.getresponse()
    return [r.status, json.loads(r.read().decode())]
out = [ask(), ask()]
idle = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "idle.py")
if os.fork() == 0:
    parent = os.getppid()
    deadline = time.time() + 10
    while time.time() < deadline:
        with open("/proc/%d/cmdline" % parent, "rb") as f:
            if b"idle.py" in f.read():
                break
        time.sleep(0.002)
    out.append(ask())
    print(json.dumps(out), flush=True)
    os._exit(0)
os.execv(sys.executable, [sys.executable, idle])
"#
        ),
    )
    .unwrap();
    p
}

/// The supplementary group of the admin socket in these tests (`admin_socket_group`).
const SELFISH_GROUP: u32 = 4242;

/// A python3 agent that asks for a token needing approval (form on stdin, token socket argv[1])
/// and then, unless argv[3] is `ask-only`, tries to approve its own request on the admin socket
/// (argv[2]). Prints JSON: [[status, answer] of the exchange, [status, answer] of the decision].
fn selfish_script(dir: &Path) -> PathBuf {
    let p = dir.join("selfish.py");
    std::fs::write(
        &p,
        format!(
            r#"{PY_UNIX_HTTP}
def call(path, url, body, ctype):
    c = Unix(path)
    c.request("POST", url, body=body, headers={{"Content-Type": ctype}})
    r = c.getresponse()
    return [r.status, json.loads(r.read().decode() or "null")]
out = [call(sys.argv[1], "/token", sys.stdin.buffer.read(), "application/x-www-form-urlencoded")]
if sys.argv[3] != "ask-only":
    out.append(call(sys.argv[2], "/approvals/%s/approve" % out[0][1]["approval_id"], b"", "application/json"))
print(json.dumps(out), flush=True)
"#
        ),
    )
    .unwrap();
    p
}

/// The test identity provider: an ES256 key, its JWKS on disk.
pub(crate) struct Idp {
    key: rcgen::KeyPair,
    pub(crate) kid: String,
    pub(crate) jwks: PathBuf,
}

impl Idp {
    pub(crate) fn new(dir: &Path) -> Self {
        Self::with_kid(dir, "idp-key-1")
    }

    pub(crate) fn with_kid(dir: &Path, kid: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let kid = kid.to_owned();
        let jwks = dir.join("idp-jwks.json");
        let idp = Self { key, kid, jwks };
        std::fs::write(&idp.jwks, json!({ "keys": [idp.public_jwk()] }).to_string()).unwrap();
        idp
    }

    pub(crate) fn public_jwk(&self) -> Value {
        let raw = self.key.public_key_raw();
        json!({ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]), "kid": self.kid, "use": "sig", "alg": "ES256" })
    }

    pub(crate) fn sign_with(&self, kid: &str, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.into());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_ec_der(&self.key.serialize_der())).unwrap()
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.kid, claims)
    }

    /// Alice's token: for tessera, with the scopes she consented to.
    pub(crate) fn alice(&self, scope: &str) -> String {
        let now = now_unix();
        self.sign(
            &json!({ "iss": IDP, "sub": "alice", "aud": "tessera", "iat": now, "exp": now + 600, "scope": scope }),
        )
    }
}

pub(crate) struct Setup {
    pub(crate) d: Daemon,
    pub(crate) idp: Idp,
    /// The `[oidc]` listener's port.
    oidc: u16,
    selfish: PathBuf,
    concierge: PathBuf,
    booker: PathBuf,
    plain: PathBuf,
    stranger: PathBuf,
    keeper: PathBuf,
    pub(crate) lingerer: PathBuf,
    pub(crate) token_sock: PathBuf,
    pub(crate) admin_sock: PathBuf,
}

pub(crate) fn setup() -> Option<Setup> {
    setup_with("")
}

/// `setup`, with `policies` (Cedar) in force under `[policy]` when not empty.
fn setup_with(policies: &str) -> Option<Setup> {
    if !Path::new(PYTHON).exists() || !Path::new(CURL).exists() {
        eprintln!("SKIP: needs {PYTHON} and {CURL}");
        return None;
    }
    let scripts = tempfile::tempdir().unwrap().keep();
    // Agents of other uids run these scripts too (nothing secret in them).
    std::fs::set_permissions(&scripts, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let idp = Idp::new(&scripts);
    let concierge = agent_script(&scripts, "concierge");
    let booker = agent_script(&scripts, "booker");
    let plain = agent_script(&scripts, "plain");
    let stranger = agent_script(&scripts, "stranger");
    let keeper = keeper_script(&scripts);
    let selfish = selfish_script(&scripts);
    let lingerer = lingerer_script(&scripts);
    let oidc = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let digest = |p: &Path| sha256_hex(&std::fs::read(p).unwrap());
    let curl_digest = digest(&std::fs::canonicalize(CURL).unwrap());
    let u = uid();
    let toml = format!(
        r#"jwt_issuer = "{ISSUER}"
# The tests below count every refusal line (this is not the default budget of 20 a minute).
audit_refusals_per_minute = 1000
admin_socket_group = {SELFISH_GROUP}

[oidc]
listen = "127.0.0.1:{oidc}"

[[delegation.issuers]]
issuer = "{IDP}"
jwks_path = "{jwks}"
audience = "tessera"

[[entries]]
spiffe_id = "spiffe://{TD}/agents/concierge"
selectors = ["unix:uid:{u}", "script:sha256:{c}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search", "flight:reserve", "booking:create"]
audiences = ["{FLIGHTS}", "{ISSUER}"]
max_ttl = "5m"
max_depth = 1
approval = ["booking:create"]

[[entries]]
spiffe_id = "spiffe://{TD}/agents/booker"
selectors = ["unix:uid:{u}", "script:sha256:{b}"]
[entries.delegation]
from = ["spiffe://{TD}/agents/concierge"]
scopes = ["flight:search", "flight:reserve"]
audiences = ["{FLIGHTS}"]
max_ttl = "2m"
max_depth = 2

[[entries]]
spiffe_id = "spiffe://{TD}/agents/curl"
selectors = ["unix:uid:{u}", "unix:sha256:{curl_digest}"]
[entries.delegation]
from = ["{IDP}", "spiffe://{TD}/agents/concierge"]
scopes = ["flight:search"]
audiences = ["{FLIGHTS}"]

[[entries]]
spiffe_id = "spiffe://{TD}/agents/keeper"
selectors = ["unix:uid:{u}", "script:sha256:{k}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search"]
audiences = ["{FLIGHTS}"]

# An agent that asks for an approval and tries to give it itself (any uid: only its script).
[[entries]]
spiffe_id = "spiffe://{TD}/agents/selfish"
selectors = ["script:sha256:{sf}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search", "booking:create"]
audiences = ["{FLIGHTS}"]
approval = ["booking:create"]

# An agent that stays alive holding its delegated token (the inventory's grants).
[[entries]]
spiffe_id = "spiffe://{TD}/agents/lingerer"
owner = "travel-team"
selectors = ["unix:uid:{u}", "script:sha256:{lg}"]
[entries.delegation]
from = ["{IDP}"]
scopes = ["flight:search"]
audiences = ["{FLIGHTS}"]

[[entries]]
spiffe_id = "spiffe://{TD}/agents/plain"
selectors = ["unix:uid:{u}", "script:sha256:{p}"]

# This test binary (to read the JWT-SVID bundle over the Workload API).
[[entries]]
spiffe_id = "spiffe://{TD}/tests/self"
selectors = ["unix:uid:{u}", "unix:path:{me}"]
"#,
        me = std::env::current_exe().unwrap().display(),
        jwks = idp.jwks.display(),
        c = digest(&concierge),
        b = digest(&booker),
        p = digest(&plain),
        k = digest(&keeper),
        sf = digest(&selfish),
        lg = digest(&lingerer),
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
    let admin_sock = d.dir.path().join("admin.sock");
    eventually("token socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&token_sock).is_ok()
    });
    Some(Setup { d, idp, oidc, selfish, concierge, booker, plain, stranger, keeper, lingerer, token_sock, admin_sock })
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The standard exchange form for a subject token, audience and scope.
pub(crate) fn exchange_form(subject: &str, audience: &str, scope: &str) -> String {
    form(&[
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", JWT_TYPE),
        ("audience", audience),
        ("scope", scope),
    ])
}

/// Start a python agent script on the token socket with `body` on its stdin.
fn spawn_agent(s: &Setup, agent: &Path, body: &str) -> std::process::Child {
    // cargo sets LD_LIBRARY_PATH, which rightly costs a script its script selectors.
    let mut child = Command::new(PYTHON)
        .env_remove("LD_LIBRARY_PATH")
        .arg(agent)
        .arg(&s.token_sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    child
}

/// Run a python agent with `body` on stdin: (status, JSON answer).
fn py_exchange(s: &Setup, agent: &Path, body: &str) -> (u16, Value) {
    let child = spawn_agent(s, agent, body);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or_else(|| panic!("agent output {text:?} {:?}", out.stderr));
    (status.trim().parse().unwrap(), serde_json::from_str(body.trim()).unwrap_or(Value::Null))
}

/// curl (attested by its binary digest) as the agent: (status, JSON answer).
fn curl_exchange(s: &Setup, body: &str) -> (u16, Value) {
    let mut child = Command::new(CURL)
        .args(["-s", "--unix-socket"])
        .arg(&s.token_sock)
        .args(["-H", "Content-Type: application/x-www-form-urlencoded", "--data-binary", "@-", "-w", "\n%{http_code}"])
        .arg("http://localhost/token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The published JWKS, fetched with curl.
fn jwks(s: &Setup) -> jsonwebtoken::jwk::JwkSet {
    let out = Command::new(CURL)
        .args(["-s", "--unix-socket"])
        .arg(&s.token_sock)
        .arg("http://localhost/jwks")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Verify an issued token with jsonwebtoken against the published JWKS, for `audience`.
fn verify(s: &Setup, token: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let set = jwks(s);
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid in the published JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[DELEGATION_ISSUER]);
    v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap().claims
}

pub(crate) fn wait_audit(s: &Setup, event: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} {event} lines"), Duration::from_secs(10), || s.d.audit_events(event).len() >= count);
    s.d.audit_events(event)
}

#[test]
fn one_hop_for_a_user_then_a_second_agent_gets_less() {
    let Some(s) = setup() else { return };
    let alice = s.idp.alice("flight:search flight:reserve booking:create profile");
    // Hop 1: the concierge, directly for Alice, for the flight API.
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, FLIGHTS, "flight:search flight:reserve"));
    assert_eq!(status, 200, "{body} {}", std::fs::read_to_string(s.d.audit_log()).unwrap_or_default());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(body["scope"], "flight:search flight:reserve");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((295..=300).contains(&expires_in), "{expires_in}");
    let claims = verify(&s, body["access_token"].as_str().unwrap(), FLIGHTS);
    let concierge = format!("spiffe://{TD}/agents/concierge");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], FLIGHTS);
    assert_eq!(claims["client_id"], concierge);
    assert_eq!(claims["act"], json!({ "sub": concierge }));
    assert_eq!(claims["scope"], "flight:search flight:reserve");
    assert!(claims["jti"].as_str().unwrap().len() >= 32);
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 300);

    // Hop 2: the concierge gets a token for tessera itself and hands it to the booker, which
    // exchanges it for less (only flight:search) and a shorter life.
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, ISSUER, "flight:search flight:reserve"));
    assert_eq!(status, 200, "{body}");
    let handed = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = verify(&s, token, FLIGHTS);
    let booker = format!("spiffe://{TD}/agents/booker");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], booker);
    assert_eq!(claims["act"], json!({ "sub": booker, "act": { "sub": concierge } }));
    assert_eq!(claims["scope"], "flight:search");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 120);
    let payload = token.split('.').nth(1).unwrap();
    eprintln!(
        "two-hop token header {} claims {}",
        String::from_utf8(URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap(),
        String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    );
    // The booker may not widen: flight:reserve is the user's, but booking:create is not its own.
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "booking:create"));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");

    // Audited: each grant with agent evidence and the chain; never a whole token.
    let granted = wait_audit(&s, "delegation_granted", 3);
    let last = granted.last().unwrap();
    assert_eq!(last["user"], "alice");
    assert_eq!(last["agent"]["spiffe_id"], booker);
    assert_eq!(last["act_chain"], json!([booker, concierge]));
    assert_eq!(last["scopes_granted"], json!(["flight:search"]));
    assert_eq!(last["jti"], claims["jti"]);
    assert!(
        last["agent"]["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("script:sha256:"))
    );
    let log = std::fs::read_to_string(s.d.audit_log()).unwrap();
    for t in [alice.as_str(), handed.as_str(), token] {
        assert!(!log.contains(t.split('.').nth(2).unwrap()), "a token's signature is in the audit log");
    }
}

#[tokio::test]
async fn validate_jwt_svid_refuses_a_delegated_token() {
    let Some(s) = setup() else { return };
    let (status, body) =
        py_exchange(&s, &s.concierge, &exchange_form(&s.idp.alice("flight:search"), FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let mut raw = raw_client(&s.d.socket).await;
    let mut req =
        tonic::Request::new(tessera::pb::ValidateJwtsvidRequest { audience: FLIGHTS.into(), svid: token.into() });
    req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    let err = raw.validate_jwtsvid(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // And the spiffe crate's validator refuses it too.
    let client = s.d.client().await;
    assert!(client.validate_jwt_token(FLIGHTS, token).await.is_err());
    // Its key is not in the JWT-SVID bundle.
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let td: spiffe::TrustDomain = TD.parse().unwrap();
    let bundle = bundles.get(&td).unwrap();
    assert!(bundle.find_jwt_authority(&kid).is_none(), "delegation key {kid} in the JWT-SVID bundle");
}

#[test]
fn human_approval_is_needed_and_used_once() {
    let Some(s) = setup() else { return };
    let alice = s.idp.alice("flight:search booking:create");
    let body = exchange_form(&alice, FLIGHTS, "flight:search booking:create");
    let (status, pending) = py_exchange(&s, &s.concierge, &body);
    assert_eq!((status, pending["error"].as_str()), (400, Some("authorization_pending")), "{pending}");
    assert_eq!(pending["interval"], 2);
    assert!(pending.get("access_token").is_none());
    let id = pending["approval_id"].as_str().unwrap().to_owned();
    let with_id = format!("{body}&approval_id={id}");
    // Polling before a decision: still pending.
    let (_, again) = py_exchange(&s, &s.concierge, &with_id);
    assert_eq!(again["error"], "authorization_pending");

    let cli = |args: &[&str]| {
        let out = Command::new(bin()).args(args).arg("--admin-socket").arg(&s.admin_sock).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listed) = cli(&["approvals"]);
    assert!(
        ok && listed.contains(&id) && listed.contains("user=alice") && listed.contains("booking:create"),
        "{listed}"
    );
    assert!(listed.contains(&format!("spiffe://{TD}/agents/concierge")), "{listed}");
    let (ok, out) = cli(&["approve", &id]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["approve", &id]);
    assert!(!ok && out.contains("already decided"), "{out}");

    // Another agent cannot use Alice's approval (nor use it up).
    let (status, other) =
        curl_exchange(&s, &format!("{}&approval_id={id}", exchange_form(&alice, FLIGHTS, "flight:search")));
    assert_eq!(status, 200, "curl asks only for flight:search, no approval involved: {other}");
    let (status, granted) = py_exchange(&s, &s.concierge, &with_id);
    assert_eq!(status, 200, "{granted}");
    let claims = verify(&s, granted["access_token"].as_str().unwrap(), FLIGHTS);
    assert_eq!(claims["scope"], "flight:search booking:create");
    // Single use: the same approval_id again is refused.
    let (status, replay) = py_exchange(&s, &s.concierge, &with_id);
    assert_eq!((status, replay["error"].as_str()), (400, Some("access_denied")), "{replay}");

    // Rejected: access_denied.
    let (_, pending) = py_exchange(&s, &s.concierge, &body);
    let id2 = pending["approval_id"].as_str().unwrap().to_owned();
    let (ok, out) = cli(&["reject", &id2]);
    assert!(ok, "{out}");
    let (status, denied) = py_exchange(&s, &s.concierge, &format!("{body}&approval_id={id2}"));
    assert_eq!((status, denied["error"].as_str()), (400, Some("access_denied")), "{denied}");

    let approved = wait_audit(&s, "delegation_approved", 1);
    assert_eq!(approved[0]["approval_id"], id.as_str());
    assert_eq!(approved[0]["approver_uid"], uid());
    let granted = wait_audit(&s, "delegation_granted", 2);
    assert!(granted.iter().any(|g| g["approval_id"] == id.as_str() && g["approver_uid"] == uid()), "{granted:?}");
    assert_eq!(wait_audit(&s, "delegation_rejected", 1)[0]["approval_id"], id2.as_str());
    assert!(wait_audit(&s, "delegation_pending", 2).len() >= 2);
}

#[test]
fn bad_input_gets_its_oauth_error_an_audit_line_and_no_token() {
    let Some(s) = setup() else { return };
    let now = now_unix();
    let claims = |extra: Value| {
        let mut c = json!({ "iss": IDP, "sub": "alice", "aud": "tessera", "iat": now, "exp": now + 600, "scope": "flight:search flight:reserve" });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let alice = s.idp.alice("flight:search flight:reserve");
    // A token for the concierge's next hop (aud: tessera) for the depth and `from` cases.
    let (_, hop) = py_exchange(&s, &s.concierge, &exchange_form(&alice, ISSUER, "flight:search"));
    let hop = hop["access_token"].as_str().unwrap().to_owned();

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!("{}.{}.", b64(&json!({ "alg": "none", "kid": s.idp.kid })), b64(&claims(json!({}))));
    // HS256 with the IdP's public key (the JWK's JSON) as the HMAC secret.
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(s.idp.kid.clone());
        let secret = s.idp.public_jwk().to_string();
        jsonwebtoken::encode(&h, &claims(json!({})), &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    };
    let other_idp = Idp::new(tempfile::tempdir().unwrap().path());
    let huge = "a".repeat(1 << 20);
    let alice_booking = s.idp.alice("flight:search booking:create");
    let std_form = |subject: &str| exchange_form(subject, FLIGHTS, "flight:search");
    type Agent<'a> = &'a dyn Fn(&str) -> (u16, Value);
    let concierge: Agent<'_> = &|b| py_exchange(&s, &s.concierge, b);
    let booker: Agent<'_> = &|b| py_exchange(&s, &s.booker, b);
    let plain: Agent<'_> = &|b| py_exchange(&s, &s.plain, b);
    let stranger: Agent<'_> = &|b| py_exchange(&s, &s.stranger, b);
    let curl: Agent<'_> = &|b| curl_exchange(&s, b);
    let cases: Vec<(&str, Agent<'_>, String, &str)> = vec![
        ("expired", concierge, std_form(&s.idp.sign(&claims(json!({ "exp": now - 120 })))), "invalid_grant"),
        ("not yet valid", concierge, std_form(&s.idp.sign(&claims(json!({ "nbf": now + 3600 })))), "invalid_grant"),
        (
            "wrong audience",
            concierge,
            std_form(&s.idp.sign(&claims(json!({ "aud": "someone-else" })))),
            "invalid_grant",
        ),
        (
            "unknown issuer",
            concierge,
            std_form(&s.idp.sign(&claims(json!({ "iss": "https://evil.test" })))),
            "invalid_grant",
        ),
        ("alg none", concierge, std_form(&alg_none), "invalid_grant"),
        ("HS256 with the public key", concierge, std_form(&hs256), "invalid_grant"),
        ("unknown kid", concierge, std_form(&s.idp.sign_with("nope", &claims(json!({})))), "invalid_grant"),
        ("signed by another key", concierge, std_form(&other_idp.sign(&claims(json!({})))), "invalid_grant"),
        ("garbage", concierge, std_form("garbage"), "invalid_grant"),
        ("1 MB long", concierge, std_form(&huge), "invalid_grant"),
        (
            "no audience",
            concierge,
            form(&[
                ("grant_type", GRANT),
                ("subject_token", &alice),
                ("subject_token_type", JWT_TYPE),
                ("scope", "flight:search"),
            ]),
            "invalid_request",
        ),
        (
            "two audiences",
            concierge,
            format!("{}&audience={}", std_form(&alice), "https%3A%2F%2Fother"),
            "invalid_request",
        ),
        (
            "audience not allowed",
            concierge,
            exchange_form(&alice, "https://bank.example", "flight:search"),
            "invalid_target",
        ),
        ("scope the user lacks", concierge, exchange_form(&alice, FLIGHTS, "booking:create"), "invalid_scope"),
        ("scope the entry lacks", curl, exchange_form(&alice, FLIGHTS, "flight:reserve"), "invalid_scope"),
        ("depth over max_depth", curl, exchange_form(&hop, FLIGHTS, "flight:search"), "invalid_grant"),
        ("entry without delegation", plain, std_form(&alice), "unauthorized_client"),
        ("process matching no entry", stranger, std_form(&alice), "unauthorized_client"),
        ("delegator not in from", booker, std_form(&alice), "invalid_grant"),
        // An id never issued (or issued, used and so gone: see the approval test).
        (
            "replayed approval_id",
            concierge,
            format!(
                "{}&approval_id=00112233445566778899aabbccddeeff",
                exchange_form(&alice_booking, FLIGHTS, "booking:create")
            ),
            "access_denied",
        ),
    ];
    let mut refused = s.d.audit_events("delegation_refused").len();
    for (name, agent, body, want) in cases {
        let (status, answer) = agent(&body);
        assert_eq!((status, answer["error"].as_str()), (400, Some(want)), "{name}: {answer}");
        assert!(answer.get("access_token").is_none(), "{name}");
        assert!(!answer["error_description"].as_str().unwrap_or_default().is_empty(), "{name}");
        refused += 1;
        let lines = wait_audit(&s, "delegation_refused", refused);
        let line = lines.last().unwrap();
        assert_eq!(line["error"], want, "{name}: {line}");
        assert!(line["agent"]["pid"].is_number(), "{name}: {line}");
        eprintln!("{name}: {want}: {}", answer["error_description"]);
    }
    // The daemon is unharmed: alive, and a good exchange still works.
    let mut d = s.d;
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "daemon died");
    let s2 = Setup { d, ..s };
    let (status, body) = curl_exchange(&s2, &exchange_form(&alice, FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let log = std::fs::read_to_string(s2.d.audit_log()).unwrap();
    assert!(!log.contains(&huge[..4096]) && !log.contains(alice.split('.').nth(2).unwrap()));
}

#[test]
fn jwks_rotates_with_the_ca_and_is_not_the_jwt_svid_key() {
    let Some(s) = setup() else { return };
    let set = jwks(&s);
    assert_eq!(set.keys.len(), 1);
    let k = &set.keys[0];
    assert_eq!(k.common.key_algorithm, Some(jsonwebtoken::jwk::KeyAlgorithm::ES256));
    let ca: Value = serde_json::from_slice(&std::fs::read(s.d.data_dir().join("ca.json")).unwrap()).unwrap();
    let kid = k.common.key_id.clone().unwrap();
    assert_eq!(ca["delegation"][0]["kid"], kid.as_str());
    assert_ne!(ca["jwt"][0]["kid"], kid.as_str());
}

#[test]
fn the_idp_jwks_file_is_reloaded_when_it_changes() {
    let Some(s) = setup() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let rotated = Idp::with_kid(scratch.path(), "idp-key-2");
    let new_token = rotated.alice("flight:search");
    let (status, before) = curl_exchange(&s, &exchange_form(&new_token, FLIGHTS, "flight:search"));
    assert_eq!((status, before["error"].as_str()), (400, Some("invalid_grant")), "{before}");
    // The IdP rotates: its JWKS file now holds only the new key.
    replace_file(&s.idp.jwks, &std::fs::read_to_string(&rotated.jwks).unwrap());
    eventually("the new IdP key is trusted", Duration::from_secs(10), || {
        curl_exchange(&s, &exchange_form(&new_token, FLIGHTS, "flight:search")).0 == 200
    });
    let (status, old) = curl_exchange(&s, &exchange_form(&s.idp.alice("flight:search"), FLIGHTS, "flight:search"));
    assert_eq!((status, old["error"].as_str()), (400, Some("invalid_grant")), "the retired key: {old}");
}

/// An agent's connection reuses its attestation (one full attestation for two exchanges), but not
/// across an exec: the connecting process re-exec'ing the same interpreter on another script
/// (same executable file, same credentials) leaves the connection with no identity.
#[test]
fn a_connection_reuses_its_attestation_but_not_across_an_exec() {
    let Some(s) = setup() else { return };
    let alice = s.idp.alice("flight:search");
    let child = spawn_agent(&s, &s.keeper, &exchange_form(&alice, FLIGHTS, "flight:search"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let answers: Vec<(u16, Value)> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?} {:?}", out.stdout, String::from_utf8_lossy(&out.stderr)));
    assert_eq!(answers[0].0, 200, "{}", answers[0].1);
    assert_eq!(answers[1].0, 200, "{}", answers[1].1);
    let claims = verify(&s, answers[1].1["access_token"].as_str().unwrap(), FLIGHTS);
    assert_eq!(claims["client_id"], format!("spiffe://{TD}/agents/keeper"));
    assert_eq!(answers[2].0, 400, "after the exec: {}", answers[2].1);
    assert_eq!(answers[2].1["error"], "unauthorized_client");
    assert!(answers[2].1.get("access_token").is_none());

    let granted = wait_audit(&s, "delegation_granted", 2);
    assert_eq!(granted.iter().filter(|r| r["agent"]["pid"] == pid).count(), 2, "{granted:?}");
    let refused = wait_audit(&s, "delegation_refused", 1);
    assert_eq!(refused.iter().filter(|r| r["agent"]["pid"] == pid).count(), 1, "{refused:?}");
    let after_exec = refused.iter().find(|r| r["agent"]["pid"] == pid).unwrap();
    assert!(after_exec["reason"].as_str().unwrap().contains("exec'd since"), "{after_exec}");
    // One full attestation for the two grants (the second reused it); the request after the
    // exec was attested in full again and failed.
    let attested: Vec<Value> =
        s.d.audit_events("attested").into_iter().filter(|a| a["pid"] == pid && a["rpc"] == "TokenExchange").collect();
    assert_eq!(attested.len(), 1, "{attested:?}");
}

/// The delegated-token issuer's document and JWKS on the `[oidc]` listener (path, JSON).
fn oidc_get(s: &Setup, path: &str) -> (u16, Value) {
    let out = Command::new(CURL)
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}{path}", s.oidc))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A relying party set up for tessera's JWT-SVIDs the way cloud workload-identity federation and
/// Vault's `jwt` auth are: issuer, key by `kid` from the discovery document's `jwks_uri`, `aud`,
/// `exp`, and no `typ` check. Ok(claims) if it accepts `token`.
fn jwt_svid_relying_party(
    s: &Setup,
    discovery_path: &str,
    issuer: &str,
    token: &str,
    aud: &str,
) -> Result<Value, String> {
    let (_, discovery) = oidc_get(s, discovery_path);
    assert_eq!(discovery["issuer"], issuer);
    let jwks_path = discovery["jwks_uri"].as_str().unwrap().strip_prefix(ISSUER).unwrap().to_owned();
    let (_, jwks) = oidc_get(s, &jwks_path);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let kid = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or_else(|| format!("kid {kid} not in {jwks_path}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &v).map(|t| t.claims).map_err(|e| e.to_string())
}

/// RFC 8725 §3.11–3.12: a delegated token has an issuer and keys of its own, so a relying party
/// configured for JWT-SVIDs never accepts one, even one whose `sub` would look like a workload;
/// and a user `sub` that is a SPIFFE ID is refused at the exchange.
#[test]
fn delegated_tokens_have_an_issuer_and_keys_of_their_own() {
    let Some(s) = setup() else { return };
    let (status, body) =
        py_exchange(&s, &s.concierge, &exchange_form(&s.idp.alice("flight:search"), FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = verify(&s, token, FLIGHTS);
    assert_eq!(claims["iss"], DELEGATION_ISSUER);

    // The JWT-SVID relying party refuses it: its key is not in the JWT-SVID JWKS.
    let err = jwt_svid_relying_party(&s, "/.well-known/openid-configuration", ISSUER, token, FLIGHTS).unwrap_err();
    assert!(err.contains("not in /keys"), "{err}");
    // The delegation issuer's own discovery document lists only delegation keys; it verifies.
    let ok =
        jwt_svid_relying_party(&s, "/delegation/.well-known/openid-configuration", DELEGATION_ISSUER, token, FLIGHTS)
            .unwrap();
    assert_eq!(ok["sub"], "alice");
    let (_, svid_keys) = oidc_get(&s, "/keys");
    let (_, deleg_keys) = oidc_get(&s, "/delegation/keys");
    let kids = |v: &Value| {
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (svid_kids, deleg_kids) = (kids(&svid_keys), kids(&deleg_keys));
    assert!(!svid_kids.is_empty() && !deleg_kids.is_empty());
    assert!(svid_kids.iter().all(|k| !deleg_kids.contains(k)), "{svid_kids:?} {deleg_kids:?}");
    // The token socket's JWKS stays, with the same keys.
    let socket_kids: Vec<String> = jwks(&s).keys.iter().map(|k| k.common.key_id.clone().unwrap()).collect();
    assert_eq!(socket_kids, deleg_kids);

    // A user `sub` that is a SPIFFE ID never becomes a delegated token's subject.
    let now = now_unix();
    for sub in [format!("spiffe://{TD}/payments"), format!("SPIFFE://{TD}/payments")] {
        let idp_token = s.idp.sign(&json!({ "iss": IDP, "sub": sub, "aud": "tessera", "iat": now, "exp": now + 600,
                                              "scope": "flight:search" }));
        let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&idp_token, FLIGHTS, "flight:search"));
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{sub}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains("is a SPIFFE ID"), "{body}");
    }

    // `tessera export oidc` writes both issuers' documents.
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["export", "oidc"])
        .arg(out_dir.path())
        .arg("--admin-socket")
        .arg(&s.admin_sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &str| serde_json::from_slice::<Value>(&std::fs::read(out_dir.path().join(p)).unwrap()).unwrap();
    assert_eq!(read("delegation/.well-known/openid-configuration")["issuer"], DELEGATION_ISSUER);
    assert_eq!(read(".well-known/openid-configuration")["issuer"], ISSUER);
    assert_eq!(kids(&read("delegation/keys")), deleg_kids);
    assert_eq!(kids(&read("keys")), svid_kids);
}

/// `tessera revoke --spiffe-id` of an agent also kills the hand-offs it made: a later hop that
/// presents one is refused (`invalid_grant`), as ValidateJWTSVID refuses the agent's JWT-SVIDs.
#[test]
fn a_revoked_agents_hand_offs_are_not_redeemable() {
    let Some(s) = setup() else { return };
    let alice = s.idp.alice("flight:search flight:reserve");
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, ISSUER, "flight:search"));
    assert_eq!(status, 200, "{body}");
    let handed = body["access_token"].as_str().unwrap().to_owned();
    // Redeemable while the concierge is in good standing.
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");

    let concierge = format!("spiffe://{TD}/agents/concierge");
    let out = Command::new(bin())
        .args(["revoke", "--spiffe-id", &concierge, "--reason", "prompt injection seen"])
        .arg("--admin-socket")
        .arg(&s.admin_sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the hand-off is refused", Duration::from_secs(5), || {
        py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:search")).0 == 400
    });
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:search"));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains(&concierge) && why.contains("revoked"), "{why}");
    let refused = wait_audit(&s, "delegation_refused", 1);
    assert!(refused.iter().any(|r| r["reason"].as_str().is_some_and(|w| w.contains("revoked"))), "{refused:?}");
}

/// Separation of duties: an approval is never decided by the agent that asked, neither by a
/// process its entry matches (whatever the uid) nor by its uid (root aside), though the admin
/// socket serves that uid (here through `admin_socket_group`). An operator (root) still can.
#[test]
fn an_agent_cannot_decide_its_own_approval() {
    let Some(s) = setup() else { return };
    if uid() != 0 || !Path::new(SETPRIV).exists() {
        eprintln!("SKIP: needs root and setpriv");
        return;
    }
    let body = exchange_form(&s.idp.alice("flight:search booking:create"), FLIGHTS, "flight:search booking:create");
    let run = |nobody: bool, mode: &str| -> Vec<(u16, Value)> {
        let mut cmd = if nobody { as_nobody(PYTHON, Some(SELFISH_GROUP)) } else { Command::new(PYTHON) };
        let mut child = cmd
            .env_remove("LD_LIBRARY_PATH")
            .arg(&s.selfish)
            .arg(&s.token_sock)
            .arg(&s.admin_sock)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?} {}", out.stdout, String::from_utf8_lossy(&out.stderr)))
    };
    // The daemon's directory is private; the agent of uid 65534 must reach the sockets in it.
    std::fs::set_permissions(s.d.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // 1. The agent itself (root here: the uid rule does not apply) approves: refused, the
    //    process matches the agent's entry.
    let answers = run(false, "approve");
    assert_eq!(answers[0].1["error"], "authorization_pending", "{answers:?}");
    assert_eq!(answers[1].0, 403, "{answers:?}");
    assert!(answers[1].1["message"].as_str().unwrap().contains("matches the entry of"), "{answers:?}");
    let first = answers[0].1["approval_id"].as_str().unwrap().to_owned();

    // 2. The agent runs as uid 65534 in admin_socket_group; another process of that uid (the
    //    tessera CLI, which the agent's entry does not match) approves: refused by uid.
    let answers = run(true, "ask-only");
    assert_eq!(answers[0].1["error"], "authorization_pending", "{answers:?}");
    let second = answers[0].1["approval_id"].as_str().unwrap().to_owned();
    let decide = |nobody: bool, id: &str| {
        let mut cmd = if nobody { as_nobody(bin(), Some(SELFISH_GROUP)) } else { Command::new(bin()) };
        let out = cmd.args(["approve", id]).arg("--admin-socket").arg(&s.admin_sock).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = decide(true, &second);
    assert!(!ok && out.contains("the same uid may not decide it"), "{out}");

    // 3. Still pending, both: an operator decides them.
    for id in [&first, &second] {
        let (ok, out) = decide(false, id);
        assert!(ok, "{out}");
    }
    let refused = wait_audit(&s, "delegation_refused", 2);
    for id in [&first, &second] {
        let line = refused.iter().find(|r| r["approval_id"] == id.as_str()).unwrap_or_else(|| panic!("{refused:?}"));
        assert_eq!(line["error"], "access_denied");
    }
    assert_eq!(wait_audit(&s, "delegation_approved", 2).len(), 2);
}

/// `[policy]` decides token exchanges by scope and depth: a permit for search and reserve, a
/// forbid of reserve beyond the first hop; what no policy permits (an approval scope here) is
/// refused at once; each line names its determining policies.
#[test]
fn policies_decide_exchanges_by_scope_and_depth() {
    let policies = r#"
@id("search-and-reserve")
permit (principal, action == Action::"delegate", resource)
  when { ["flight:search", "flight:reserve"].containsAll(context.scopes) };
@id("reserve-first-hop-only")
forbid (principal, action == Action::"delegate", resource)
  when { context.depth > 1 && context.scopes.contains("flight:reserve") };
"#;
    let Some(s) = setup_with(policies) else { return };
    let alice = s.idp.alice("flight:search flight:reserve booking:create");
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, FLIGHTS, "flight:search flight:reserve"));
    assert_eq!(status, 200, "{body}");
    let granted = wait_audit(&s, "delegation_granted", 1);
    assert_eq!(granted[0]["policy_decision"], "allow");
    assert_eq!(granted[0]["policies"], json!(["search-and-reserve"]));

    // Depth 2 with reserve: forbidden; with search only: allowed.
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, ISSUER, "flight:search flight:reserve"));
    assert_eq!(status, 200, "{body}");
    let handed = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:reserve"));
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("reserve-first-hop-only"), "{body}");
    let (status, body) = py_exchange(&s, &s.booker, &exchange_form(&handed, FLIGHTS, "flight:search"));
    assert_eq!(status, 200, "{body}");

    // No policy permits booking:create (even approved): refused now, no approval opened.
    let (status, body) = py_exchange(&s, &s.concierge, &exchange_form(&alice, FLIGHTS, "booking:create"));
    assert_eq!((status, body["error"].as_str()), (400, Some("access_denied")), "{body}");
    assert!(body.get("approval_id").is_none(), "{body}");
    let refused = wait_audit(&s, "delegation_refused", 2);
    let depth = refused.iter().find(|l| l["policies"] == json!(["reserve-first-hop-only"])).unwrap();
    assert_eq!(depth["policy_decision"], "deny");
    assert_eq!(depth["act_chain"].as_array().unwrap().len(), 2);
    assert!(refused.iter().any(|l| l["policy_decision"] == "deny" && l["policies"] == json!([])));
}
