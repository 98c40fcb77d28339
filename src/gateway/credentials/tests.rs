use super::*;
use crate::clock::FakeClock;
use crate::config::gateway::TokenEndpoint;
use crate::issuer::fake::{FakeIssuer, JwtAnswer};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;

const AGENT: &str = "spiffe://example.org/agents/support";

fn broker_with(creds: &[Arc<Credential>], clock: Arc<FakeClock>, dir: Option<PathBuf>) -> Broker {
    let issuer: Arc<dyn Issuer> = Arc::new(FakeIssuer::new("example.org", JwtAnswer::Token("svid.of.agent")));
    Broker::with_credentials_dir(creds, Duration::from_secs(2), issuer, clock, dir)
}

fn broker(creds: &[Arc<Credential>]) -> (Broker, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::at_unix(1_700_000_000));
    (broker_with(creds, clock.clone(), None), clock)
}

fn cred(name: &str, format: &str, source: CredentialSource) -> Arc<Credential> {
    Arc::new(Credential {
        name: name.into(),
        header: HeaderName::from_static("authorization"),
        format: format.into(),
        source,
    })
}

/// A secret file as the config check wants it (ours, mode 0600).
fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Replace the file (new inode), as `mv`-based rotation does.
fn rotate(path: &Path, text: &str, mode: u32) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn value(b: &Broker, name: &str, agent: &str) -> Result<String, CredentialError> {
    let injected = b.header(name, &Caller::for_test(agent)).await?;
    assert!(injected.value.is_sensitive());
    Ok(injected.value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_file_secret_is_trimmed_formatted_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    write_secret(&path, "sk-live-1234\n");
    let (b, _) = broker(&[cred("openai", "Bearer {secret}", CredentialSource::File(path))]);
    let injected = b.header("openai", &Caller::for_test(AGENT)).await.unwrap();
    assert_eq!(injected.name, "authorization");
    assert_eq!(injected.value, "Bearer sk-live-1234");
    assert!(injected.value.is_sensitive());
    let shown = format!("{injected:?} {injected:#?}");
    assert!(!shown.contains("sk-live") && !shown.contains("1234"), "{shown}");
    assert!(shown.contains("redacted") && shown.contains("authorization"), "{shown}");
}

#[tokio::test]
async fn a_rotated_file_is_picked_up_and_a_bad_one_keeps_the_last_good_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    write_secret(&path, "one\n");
    let (b, _) = broker(&[cred("k", "{secret}", CredentialSource::File(path.clone()))]);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "one");
    rotate(&path, "two\r\n", 0o600);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    // World-readable: refused, the last good secret stays.
    rotate(&path, "three\n", 0o644);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    // Empty, then gone: the same.
    rotate(&path, "\n", 0o600);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    // Two lines cannot go in a header.
    rotate(&path, "four\nfive\n", 0o600);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "two");
    // Fixed: used again.
    rotate(&path, "six", 0o600);
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "six");
    // Opened up in place, then closed again: the fix alone (no new content) is picked up.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "six");
    std::fs::write(&path, "seven").unwrap();
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "six", "world-readable");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(value(&b, "k", AGENT).await.unwrap(), "seven");
}

#[tokio::test]
async fn a_file_bad_from_the_start_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "secret-value\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (b, _) = broker(&[cred("k", "{secret}", CredentialSource::File(path.clone()))]);
    let e = value(&b, "k", AGENT).await.unwrap_err();
    assert!(matches!(e, CredentialError::Unavailable { .. }), "{e:?}");
    assert!(e.reason().contains("group or others"), "{}", e.reason());
    assert!(!e.reason().contains("secret-value"));
    let e = value(&b, "nope", AGENT).await.unwrap_err();
    assert!(matches!(e, CredentialError::Unknown(_)), "{e:?}");
}

#[tokio::test]
async fn systemd_credentials_come_from_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    // systemd's own modes (0400 under a 0500 directory), but any mode is accepted there.
    std::fs::write(dir.path().join("anthropic"), "sk-ant-xyz\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let creds = [
        cred("a", "{secret}", CredentialSource::Systemd("anthropic".into())),
        cred("e", "{secret}", CredentialSource::Systemd("empty".into())),
        cred("m", "{secret}", CredentialSource::Systemd("missing".into())),
    ];
    let clock = Arc::new(FakeClock::at_unix(1_700_000_000));
    let b = broker_with(&creds, clock.clone(), Some(dir.path().to_owned()));
    assert_eq!(value(&b, "a", AGENT).await.unwrap(), "sk-ant-xyz");
    assert!(value(&b, "e", AGENT).await.unwrap_err().reason().contains("empty"));
    assert!(value(&b, "m", AGENT).await.unwrap_err().reason().contains("cannot read"));
    // No $CREDENTIALS_DIRECTORY at all.
    let b = broker_with(&creds, clock, None);
    assert!(value(&b, "a", AGENT).await.unwrap_err().reason().contains("CREDENTIALS_DIRECTORY"));
}

#[tokio::test]
async fn update_keeps_unchanged_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    write_secret(&a, "alpha");
    write_secret(&c, "gamma");
    let ca = cred("a", "{secret}", CredentialSource::File(a.clone()));
    let (b, _) = broker(std::slice::from_ref(&ca));
    assert_eq!(value(&b, "a", AGENT).await.unwrap(), "alpha");
    // The file turns bad; the unchanged definition keeps its last good secret across the reload.
    rotate(&a, "x", 0o666);
    b.update(&[ca.clone(), cred("c", "{secret}", CredentialSource::File(c))]);
    assert_eq!(value(&b, "a", AGENT).await.unwrap(), "alpha");
    assert_eq!(value(&b, "c", AGENT).await.unwrap(), "gamma");
    // A changed definition starts afresh (and so sees the bad file).
    b.update(&[cred("a", "Bearer {secret}", CredentialSource::File(a))]);
    assert!(matches!(value(&b, "a", AGENT).await, Err(CredentialError::Unavailable { .. })));
    assert!(matches!(value(&b, "c", AGENT).await, Err(CredentialError::Unknown(_))));
}

// --- token endpoints ---

/// What the test endpoint answers.
#[derive(Clone)]
enum Answer {
    /// A token `tok-N` (N counts requests), with this `expires_in` (None: absent).
    Token { expires_in: Option<u64>, token_type: &'static str },
    /// This status and JSON body.
    Error(u16, &'static str),
}

#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    content_type: Option<String>,
    form: HashMap<String, String>,
}

/// A real HTTPS token endpoint on loopback, with a throwaway CA.
struct TokenServer {
    url: http::Uri,
    ca_file: PathBuf,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<Answer>>,
    delay: Arc<Mutex<Duration>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn endpoint(&self) -> TokenEndpoint {
        TokenEndpoint {
            token_url: self.url.clone(),
            client_id: None,
            client_secret_file: None,
            audience: "https://sts.example.com".into(),
            scope: Some("api.read".into()),
            ca_file: Some(self.ca_file.clone()),
        }
    }
}

async fn token_server() -> TokenServer {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rcgen::{CertificateParams, KeyPair, SanType};

    let ca = crate::ca::test_pki::ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem::encode(&pem::Pem::new("CERTIFICATE", ca.der.clone()))).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    let leaf = p.signed_by(&key, &ca.issuer).unwrap().der().to_vec();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let connections = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let answer = Arc::new(Mutex::new(Answer::Token { expires_in: Some(3600), token_type: "Bearer" }));
    let delay = Arc::new(Mutex::new(Duration::ZERO));
    let (c, s, a, d) = (connections.clone(), seen.clone(), answer.clone(), delay.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (acceptor, s, a, d) = (acceptor.clone(), s.clone(), a.clone(), d.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s, a, d) = (s.clone(), a.clone(), d.clone());
                    async move {
                        let header = |n: http::HeaderName| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                        let authorization = header(http::header::AUTHORIZATION);
                        let content_type = header(http::header::CONTENT_TYPE);
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let form = form_urlencoded::parse(&body).into_owned().collect();
                        let n = {
                            let mut seen = s.lock().unwrap();
                            seen.push(Seen { authorization, content_type, form });
                            seen.len()
                        };
                        let pause = *d.lock().unwrap();
                        tokio::time::sleep(pause).await;
                        let answer = a.lock().unwrap().clone();
                        let (status, body) = match answer {
                            Answer::Token { expires_in, token_type } => {
                                let mut j =
                                    serde_json::json!({"access_token": format!("tok-{n}"), "token_type": token_type});
                                if let Some(e) = expires_in {
                                    j["expires_in"] = e.into();
                                }
                                (200, j.to_string())
                            }
                            Answer::Error(status, body) => (status, body.to_owned()),
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    TokenServer {
        url: format!("https://127.0.0.1:{port}/oauth/token").parse().unwrap(),
        ca_file,
        connections,
        seen,
        answer,
        delay,
        _dir: dir,
        task,
    }
}

/// A client-credentials credential at `server`, its secret in a file under `dir`.
fn client_credentials(server: &TokenServer, dir: &Path, secret: &str) -> Arc<Credential> {
    let secret_file = dir.join("client-secret");
    write_secret(&secret_file, &format!("{secret}\n"));
    let mut e = server.endpoint();
    e.client_id = Some("gateway client".into());
    e.client_secret_file = Some(secret_file);
    cred("cc", "Bearer {secret}", CredentialSource::OAuthClientCredentials(e))
}

#[tokio::test]
async fn client_credentials_are_posted_with_basic_auth_and_the_token_is_cached() {
    let server = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = broker(&[client_credentials(&server, dir.path(), "s3cr:et/+")]);
    server.answer(Answer::Token { expires_in: Some(120), token_type: "bearer" });

    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    // RFC 6749 §2.3.1: each part form-urlencoded, then base64.
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode("gateway+client:s3cr%3Aet%2F%2B");
    assert_eq!(r.authorization.as_deref(), Some(format!("Basic {expected}").as_str()));
    assert_eq!(r.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(r.form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(r.form.get("scope").map(String::as_str), Some("api.read"));
    assert!(!r.form.contains_key("client_secret"), "the secret goes in the header only");

    // Cached: no second request.
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    assert_eq!(server.requests().len(), 1);
    // 120 s life, refreshed 12 s (10 %) before the end.
    clock.advance(Duration::from_secs(100));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    clock.advance(Duration::from_secs(9));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-2");
    assert_eq!(server.requests().len(), 2);
    // Cached per agent: another agent gets its own.
    assert_eq!(value(&b, "cc", "spiffe://example.org/agents/other").await.unwrap(), "Bearer tok-3");
}

#[tokio::test]
async fn a_token_without_expires_in_lives_five_minutes() {
    let server = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = broker(&[client_credentials(&server, dir.path(), "s")]);
    server.answer(Answer::Token { expires_in: None, token_type: "Bearer" });
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    // 300 s, refreshed 30 s early.
    clock.advance(Duration::from_secs(269));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    clock.advance(Duration::from_secs(2));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-2");
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let server = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = broker(&[client_credentials(&server, dir.path(), "s")]);
    *server.delay.lock().unwrap() = Duration::from_millis(300);
    let b = Arc::new(b);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { value(&b, "cc", AGENT).await.unwrap() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), "Bearer tok-1");
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn jwt_bearer_posts_the_agents_svid_as_the_assertion() {
    let server = token_server().await;
    let (b, _) = broker(&[cred("jb", "Bearer {secret}", CredentialSource::JwtBearer(server.endpoint()))]);
    assert_eq!(value(&b, "jb", AGENT).await.unwrap(), "Bearer tok-1");
    let r = &server.requests()[0];
    assert_eq!(r.form.get("grant_type").map(String::as_str), Some("urn:ietf:params:oauth:grant-type:jwt-bearer"));
    assert_eq!(r.form.get("assertion").map(String::as_str), Some("svid.of.agent"));
    assert_eq!(r.form.get("scope").map(String::as_str), Some("api.read"));
    assert_eq!(r.authorization, None);
}

#[tokio::test]
async fn token_exchange_posts_the_svid_as_the_subject_token() {
    let server = token_server().await;
    let (b, _) = broker(&[cred("te", "Bearer {secret}", CredentialSource::TokenExchange(server.endpoint()))]);
    server.answer(Answer::Token { expires_in: Some(600), token_type: "N_A" });
    assert_eq!(value(&b, "te", AGENT).await.unwrap(), "Bearer tok-1");
    let r = &server.requests()[0];
    let get = |k: &str| r.form.get(k).map(String::as_str);
    assert_eq!(get("grant_type"), Some("urn:ietf:params:oauth:grant-type:token-exchange"));
    assert_eq!(get("subject_token"), Some("svid.of.agent"));
    assert_eq!(get("subject_token_type"), Some("urn:ietf:params:oauth:token-type:jwt"));
    assert_eq!(get("requested_token_type"), Some("urn:ietf:params:oauth:token-type:access_token"));
    assert_eq!(get("audience"), None);
    // N_A is for token exchange only.
    let (b, _) = broker(&[cred("jb", "Bearer {secret}", CredentialSource::JwtBearer(server.endpoint()))]);
    let e = value(&b, "jb", AGENT).await.unwrap_err();
    assert!(e.reason().contains("not a bearer token"), "{}", e.reason());
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = token_server().await;
    let mut e = server.endpoint();
    e.token_url = format!("https://127.0.0.1:{port}/token").parse().unwrap();
    let (b, _) = broker(&[cred("jb", "Bearer {secret}", CredentialSource::JwtBearer(e))]);
    let err = b.header("jb", &Caller::for_test(AGENT)).await.unwrap_err();
    let CredentialError::Unavailable { credential, reason } = &err else { panic!("{err:?}") };
    assert_eq!(credential, "jb");
    assert!(reason.contains("token endpoint"), "{reason}");
    assert!(!reason.contains("svid.of.agent"), "{reason}");
}

#[tokio::test]
async fn a_failing_endpoint_is_backed_off_then_retried() {
    let server = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = broker(&[client_credentials(&server, dir.path(), "hunter2")]);
    server.answer(Answer::Error(401, r#"{"error":"invalid_client","error_description":"bad secret hunter2"}"#));
    let e = value(&b, "cc", AGENT).await.unwrap_err();
    let reason = e.reason();
    assert!(reason.contains("401") && reason.contains("invalid_client"), "{reason}");
    assert!(!reason.contains("hunter2"), "an echoed secret is scrubbed: {reason}");
    let connections = server.connections.load(Ordering::SeqCst);
    assert_eq!(server.requests().len(), 1);

    // Within the backoff (1 s): the same reason, no request, no connection.
    clock.advance(Duration::from_millis(500));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap_err().reason(), reason);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.connections.load(Ordering::SeqCst), connections);

    // After it: tried again, fails again, and the backoff doubles (2 s).
    clock.advance(Duration::from_millis(600));
    assert!(value(&b, "cc", AGENT).await.is_err());
    assert_eq!(server.requests().len(), 2);
    clock.advance(Duration::from_millis(1500));
    assert!(value(&b, "cc", AGENT).await.is_err());
    assert_eq!(server.requests().len(), 2);

    // Back up: a success resets the backoff.
    server.answer(Answer::Token { expires_in: Some(3600), token_type: "Bearer" });
    clock.advance(Duration::from_millis(600));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-3");
}

#[tokio::test]
async fn a_token_still_valid_outlives_a_failed_refresh() {
    let server = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (b, clock) = broker(&[client_credentials(&server, dir.path(), "s")]);
    server.answer(Answer::Token { expires_in: Some(1000), token_type: "Bearer" });
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    server.answer(Answer::Error(503, "down"));
    // In the refresh window (last 60 s): the refresh fails, the valid token is still served.
    clock.advance(Duration::from_secs(950));
    assert_eq!(value(&b, "cc", AGENT).await.unwrap(), "Bearer tok-1");
    assert_eq!(server.requests().len(), 2);
    // Expired: no token without a fetch, and the fetch fails.
    clock.advance(Duration::from_secs(60));
    let e = value(&b, "cc", AGENT).await.unwrap_err();
    assert!(e.reason().contains("503"), "{}", e.reason());
}

#[test]
fn the_agent_map_is_bounded() {
    let cache = TokenCache::new(3);
    let t0 = Instant::now();
    let held: Vec<_> = ["a", "b", "c"].iter().map(|a| cache.cell(a, t0)).collect();
    // All in use: nothing can go; the map grows past the bound rather than drop a live entry.
    let _d = cache.cell("d", t0);
    assert_eq!(cache.len(), 4);
    drop(held);
    drop(_d);
    // Idle and empty: dropped to make room.
    let _e = cache.cell("e", t0);
    assert!(cache.len() <= 3, "{}", cache.len());
}

#[test]
fn token_answers_are_parsed_strictly() {
    let (t, life) = parse_token(br#"{"access_token":"x","token_type":"Bearer","expires_in":"90"}"#, false).unwrap();
    assert_eq!((t.expose(), life), ("x", Duration::from_secs(90)));
    let (_, life) = parse_token(br#"{"access_token":"x","expires_in":9999999}"#, false).unwrap();
    assert_eq!(life, MAX_LIFE);
    assert!(parse_token(br#"{"token_type":"Bearer"}"#, false).is_err());
    assert!(parse_token(br#"{"access_token":"x","token_type":"DPoP"}"#, true).is_err());
    assert!(parse_token(b"<html>", false).is_err());
}
