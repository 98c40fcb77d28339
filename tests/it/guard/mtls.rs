//! `tls = "mtls"` guards: TLS 1.3 with the guard's own X.509-SVID, the client's X.509-SVID
//! required and naming the agent. The test process holds two SVIDs from the daemon (the agent
//! curl also is, and `OTHER`, matched by this test binary's path only); curl holds the delegated
//! token, whose actor is the agent. Covers: the guard's server SVID (checked by spiffe-rustls),
//! an SVID alone (no user, empty scopes), an SVID and a delegated token of the same agent, a
//! token of another agent (401), another agent's SVID denied by policy and, once revoked, 401;
//! no client certificate and a certificate of another CA refused in the handshake (audited).

use super::*;
use std::io::{Read, Write};

const OTHER: &str = "spiffe://test.example/other";
const GUARD_ID: &str = "spiffe://test.example/tessera/guard/secure";
/// An audience the agent's entry may ask tokens for.
const SECURE_AUD: &str = "https://other.example";

const SECURE_POLICY: &str = r#"
@id("secure-agent-only")
permit(principal == Agent::"spiffe://test.example/agent", action == Action::"serve", resource == Guard::"secure");
"#;

/// The PEM files of an X.509-SVID (chain, key) for curl.
fn write_pem(dir: &Path, name: &str, chain: &[Vec<u8>], key_pkcs8: &[u8]) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let certs: String = chain.iter().map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()))).collect();
    std::fs::write(&c, certs).unwrap();
    std::fs::write(&k, pem::encode(&pem::Pem::new("PRIVATE KEY", key_pkcs8.to_vec()))).unwrap();
    (c, k)
}

/// An X.509-SVID for `AGENT` from a CA the node does not know.
fn impostor(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(AGENT.try_into().unwrap())];
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = p.signed_by(&key, &issuer).unwrap();
    write_pem(dir, "impostor", &[leaf.der().to_vec(), ca_cert.der().to_vec()], &key.serialize_der())
}

/// Picks the SVID of one SPIFFE ID.
#[derive(Debug)]
struct Pick(&'static str);

impl spiffe::x509_source::SvidPicker for Pick {
    fn pick_svid(&self, svids: &[Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids.iter().position(|s| s.spiffe_id().to_string() == self.0)
    }
}

/// One GET over TLS by spiffe-rustls as `AGENT`, accepting only the guard's own SPIFFE ID:
/// the raw HTTP/1.1 answer.
async fn get_as_agent(d: &Daemon, port: u16, path: &str) -> String {
    let source = spiffe::X509Source::builder().endpoint(d.endpoint()).picker(Pick(AGENT)).build().await.unwrap();
    let td = spiffe::TrustDomain::new("test.example").unwrap();
    let config = spiffe_rustls::mtls_client(source)
        .trust_domain_policy(spiffe_rustls::LocalOnly(td))
        .authorize(spiffe_rustls::authorizer::exact([GUARD_ID]).unwrap())
        .build()
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("guard").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let request = format!("GET {path} HTTP/1.1\r\nHost: guard\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A close_notify-less close after the answer is fine here.
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The SVIDs of the test process: `AGENT` and `OTHER`, as PEM files.
fn svids(d: &Daemon, dir: &Path) -> ((PathBuf, PathBuf), (PathBuf, PathBuf)) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let all = rt.block_on(async { d.client().await.fetch_all_x509_svids().await.unwrap() });
    let pem_of = |id: &str| {
        let s = all.iter().find(|s| s.spiffe_id().to_string() == id).unwrap_or_else(|| panic!("no SVID for {id}"));
        let chain: Vec<Vec<u8>> = s.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
        write_pem(dir, id.rsplit('/').next().unwrap(), &chain, s.private_key().as_bytes())
    };
    (pem_of(AGENT), pem_of(OTHER))
}

#[test]
fn mtls_guards_authenticate_by_the_client_svid() {
    tessera::install_crypto_provider();
    let port = free_port();
    let me = std::env::current_exe().unwrap();
    let extra = format!(
        r#"
[[guard]]
name = "secure"
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:{{UP}}"
audience = "{SECURE_AUD}"
tls = "mtls"

# This test binary only (curl is the agent alone).
[[entries]]
spiffe_id = "{OTHER}"
selectors = ["{sel}", "unix:path:{me}"]
"#,
        sel = uid_sel(),
        me = me.display(),
    );
    let Some(s) = setup_with(&extra, SECURE_POLICY) else { return };
    eventually("the mTLS guard", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let files = tempfile::tempdir().unwrap();
    let ((agent_crt, agent_key), (other_crt, other_key)) = svids(&s.d, files.path());
    let url = format!("https://127.0.0.1:{port}/flights");
    let agent_crt = agent_crt.display().to_string();
    let agent_key = agent_key.display().to_string();
    let as_agent = ["-k", "--cert", &agent_crt, "--key", &agent_key];
    let other_crt = other_crt.display().to_string();
    let other_key = other_key.display().to_string();
    let as_other = ["-k", "--cert", &other_crt, "--key", &other_key];

    // The guard's own SVID (spiffe-rustls checks it), TLS 1.3, the client's SVID alone.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = rt.block_on(get_as_agent(&s.d, port, "/flights?svid=only"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}\n{}", s.d.log());
    let seen = s.up.seen().into_iter().find(|x| x.path.contains("svid=only")).unwrap();
    let header = |name: &str| seen.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-tessera-agent").as_deref(), Some(AGENT));
    assert_eq!(header("x-tessera-user"), None);
    let line = s.wait_action("the SVID alone", |v| v["path"] == "/flights" && v["token"] == "x509_svid");
    assert_eq!((line["agent"].as_str(), line["client_spiffe_id"].as_str()), (Some(AGENT), Some(AGENT)), "{line}");
    assert_eq!((line["user"].clone(), line["scopes"].clone()), (Value::Null, json!([])), "{line}");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["policies"], json!(["secure-agent-only"]), "{line}");

    // The SVID and a delegated token of the same agent: the token adds the user and scopes.
    let token = s.delegated(SECURE_AUD);
    let auth = format!("Authorization: Bearer {token}");
    let mut args = as_agent.to_vec();
    args.extend(["-H", &auth, &url]);
    let (status, body, _) = curl(&args);
    assert_eq!(status, 200, "{body}");
    let line = s.wait_action("SVID and token", |v| v["token"] == "delegated" && v["guard"] == "secure");
    assert_eq!((line["user"].as_str(), line["client_spiffe_id"].as_str()), (Some("alice"), Some(AGENT)), "{line}");
    assert_eq!(line["scopes"], json!(["flight:search"]), "{line}");

    // Another agent's SVID with the agent's token: 401, never forwarded.
    let before = s.up.seen().len();
    let mut args = as_other.to_vec();
    args.extend(["-H", &auth, &url]);
    let (status, body, headers) = curl(&args);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("is not the client certificate's"), "{body}");
    assert!(headers.contains("www-authenticate: bearer error=\"invalid_token\""), "{headers}");
    assert!(!body.contains(&token) && !s.d.audit_text().contains(&token), "the token is never echoed or logged");
    // Another agent's SVID alone: authenticated, denied by the policy.
    let mut args = as_other.to_vec();
    args.push(&url);
    let (status, body, _) = curl(&args);
    assert_eq!(status, 403, "{body}");
    assert_eq!(s.up.seen().len(), before, "nothing refused reached the upstream");
    let line = s.wait_action("other agent denied", |v| v["client_spiffe_id"] == OTHER && v["status"] == 403);
    assert_eq!(line["agent"], OTHER, "{line}");

    // No client certificate, or one from another CA: the handshake is refused (and audited).
    let (status, _, _) = curl(&["-k", &url]);
    assert_eq!(status, 0, "no client certificate: no HTTP answer");
    let (crt, key) = impostor(files.path());
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let (status, _, _) = curl(&["-k", "--cert", &crt, "--key", &key, &url]);
    assert_eq!(status, 0, "a certificate of another CA: no HTTP answer");
    // Plain HTTP on the TLS port gets nothing either.
    let (status, _, _) = curl(&[&format!("http://127.0.0.1:{port}/flights")]);
    assert_ne!(status, 200);
    assert_eq!(s.up.seen().len(), before, "nothing refused reached the upstream");
    s.wait_action("no certificate", |v| {
        v["guard"] == "secure"
            && v["reason"].as_str().is_some_and(|r| r.contains("TLS handshake refused: peer sent no certificates"))
    });
    let line = s.wait_action("another CA", |v| {
        v["guard"] == "secure" && v["reason"].as_str().is_some_and(|r| r.contains("does not chain"))
    });
    assert_eq!((line["method"].as_str(), line["decision"].as_str()), (Some("-"), Some("deny")), "{line}");

    // Revoked: the client's SVID still chains, and is refused at once.
    let out = Command::new(bin())
        .args(["revoke", "--spiffe-id", OTHER, "--reason", "test", "--admin-socket"])
        .arg(s.d.admin_socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut args = as_other.to_vec();
    args.push(&url);
    let (status, body, _) = curl(&args);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client certificate is no longer accepted") && body.contains("revoked"), "{body}");
    assert_eq!(s.up.seen().len(), before, "nothing refused reached the upstream");

    // The raw socket is TLS only: a plaintext request is not answered in HTTP.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&buf));
}
