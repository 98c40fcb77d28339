//! Federation from a partner's bundle endpoint (`bundle_endpoint_url`), against the real daemon:
//! a fake partner endpoint (TLS with an SVID of the partner's CA, made here with rcgen) serves a
//! good bundle, garbage, a 10 MB body, a bundle whose authority is not a CA, the wrong TLS
//! identity, or nothing at all. A bad answer never replaces the bundle in force, the daemon keeps
//! serving and says why; a good one reaches open streams and survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a panic is the test failing")]

use crate::common::*;
use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PTD: &str = "partner.test";
const ENDPOINT_ID: &str = "spiffe://partner.test/bundle-endpoint";

struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str, is_ca: bool) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = if is_ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{PTD}").try_into().unwrap())];
    let cert = p.self_signed(&key).unwrap();
    Ca { der: cert.der().to_vec(), issuer: Issuer::new(p, key) }
}

/// A server SVID with `id`, signed by `ca`: (certificate DER, PKCS#8 key DER).
fn leaf(ca: &Ca, id: &str) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn b64(d: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn bundle_doc(certs: &[&[u8]], jwt_kid: &str) -> String {
    let mut keys: Vec<serde_json::Value> =
        certs.iter().map(|c| serde_json::json!({ "use": "x509-svid", "kty": "EC", "x5c": [b64(c)] })).collect();
    keys.push(serde_json::json!({
        "use": "jwt-svid", "kty": "EC", "crv": "P-256", "kid": jwt_kid,
        "x": "tTC8EzQFnk6P-fJj9woM4JM66r6pyQroc-qCK8kOxWY", "y": "X9LPfCjr_TKMmCcM3OzmiS4HSpYzzfFO7mcasvgWwko",
    }));
    serde_json::json!({ "keys": keys, "spiffe_sequence": 7, "spiffe_refresh_hint": 1 }).to_string()
}

/// What the fake endpoint does on the next connection.
#[derive(Clone)]
enum Answer {
    /// TLS with this (cert, key), then this HTTP body.
    Serve { cert: (Vec<u8>, Vec<u8>), body: Arc<Vec<u8>> },
    /// Accept the TCP connection and say nothing.
    Hang,
}

/// A fake partner endpoint on 127.0.0.1; answers with `answer` (changeable) to every connection.
async fn partner_endpoint(answer: Arc<Mutex<Answer>>) -> u16 {
    tessera::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let current = answer.lock().unwrap().clone();
            match current {
                Answer::Hang => held.push(tcp),
                Answer::Serve { cert, body } => {
                    tokio::spawn(async move {
                        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.1.clone().into());
                        let config = rustls::ServerConfig::builder()
                            .with_no_client_auth()
                            .with_single_cert(vec![cert.0.clone().into()], key)
                            .unwrap();
                        let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await else {
                            return;
                        };
                        let mut buf = [0u8; 4096];
                        let _ = tls.read(&mut buf).await;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = tls.write_all(head.as_bytes()).await;
                        let _ = tls.write_all(&body).await;
                        let _ = tls.shutdown().await;
                    });
                }
            }
        }
    });
    port
}

struct Setup {
    partner_ca: Ca,
    answer: Arc<Mutex<Answer>>,
    daemon: Daemon,
}

/// The partner's CA in a PEM bundle file (the initial bundle), a fake endpoint answering
/// `first`, and a daemon federating with it.
async fn setup(first: impl FnOnce(&Ca) -> Answer) -> Setup {
    let partner_ca = ca("partner CA", true);
    let answer = Arc::new(Mutex::new(first(&partner_ca)));
    let port = partner_endpoint(answer.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let initial = dir.path().join("partner.pem");
    std::fs::write(&initial, pem::encode(&pem::Pem::new("CERTIFICATE", partner_ca.der.clone()))).unwrap();
    let daemon = Daemon::start(&format!(
        "[[federation]]\ntrust_domain = \"{PTD}\"\nbundle_path = \"{}\"\nbundle_endpoint_url = \"https://127.0.0.1:{port}/\"\n\
         profile = \"https_spiffe\"\nendpoint_spiffe_id = \"{ENDPOINT_ID}\"\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/agent\"\nselectors = [\"unix:uid:{}\"]\nfederates_with = [\"{PTD}\"]\n",
        initial.display(),
        uid()
    ));
    // The initial file lives as long as the test (the TempDir is leaked on purpose: small).
    std::mem::forget(dir);
    Setup { partner_ca, answer, daemon }
}

async fn partner_authorities(d: &Daemon) -> Vec<Vec<u8>> {
    let bundles = d.client().await.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new(PTD).unwrap();
    bundles.get(&td).map(|b| b.authorities().iter().map(|c| c.as_bytes().to_vec()).collect()).unwrap_or_default()
}

/// A bad answer: refused with `reason` in the log and the audit, the initial bundle still served.
async fn refused(first: impl FnOnce(&Ca) -> Answer, reason: &str) {
    let s = setup(first).await;
    eventually(&format!("refusal {reason:?} logged"), Duration::from_secs(20), || {
        s.daemon.log().contains("federated bundle refused") && s.daemon.log().contains(reason)
    });
    // The audit line is written by its own subscriber, right after the log line.
    eventually("refusal audited", Duration::from_secs(5), || {
        std::fs::read_to_string(s.daemon.audit_log()).unwrap_or_default().contains("federated_bundle_refused")
    });
    assert_eq!(partner_authorities(&s.daemon).await, vec![s.partner_ca.der.clone()], "initial bundle stays");
    assert!(!s.daemon.log().contains("federated bundle updated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused() {
    refused(
        |ca| Answer::Serve { cert: leaf(ca, ENDPOINT_ID), body: Arc::new(b"<html>not a bundle".to_vec()) },
        "not a valid SPIFFE bundle",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_body_is_refused() {
    refused(
        |ca| Answer::Serve { cert: leaf(ca, ENDPOINT_ID), body: Arc::new(vec![b' '; 10 * 1024 * 1024]) },
        "body larger than",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_that_is_not_a_ca_is_refused() {
    let not_a_ca = ca("not a CA", false);
    refused(
        move |ca| Answer::Serve {
            cert: leaf(ca, ENDPOINT_ID),
            body: Arc::new(bundle_doc(&[&ca.der, &not_a_ca.der], "kid-x").into_bytes()),
        },
        "is not a CA certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_tls_identity_is_refused() {
    // Right CA, wrong SPIFFE ID.
    refused(
        |ca| Answer::Serve {
            cert: leaf(ca, "spiffe://partner.test/someone-else"),
            body: Arc::new(bundle_doc(&[&ca.der], "kid-x").into_bytes()),
        },
        "expected SPIFFE ID spiffe://partner.test/bundle-endpoint",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_partner_bundle_is_refused() {
    // Right SPIFFE ID, signed by a CA the partner's bundle does not hold.
    let impostor = ca("impostor", true);
    refused(
        move |ca| Answer::Serve {
            cert: leaf(&impostor, ENDPOINT_ID),
            body: Arc::new(bundle_doc(&[&ca.der, &impostor.der], "kid-x").into_bytes()),
        },
        "does not chain to the partner's bundle",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_times_out() {
    refused(|_| Answer::Hang, "no answer within").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_bundle_is_pushed_kept_on_disk_and_served_after_a_restart_while_the_partner_is_away() {
    let mut s = setup(|_| Answer::Hang).await;
    let client = s.daemon.client().await;
    let mut stream = Box::pin(client.stream_x509_contexts().await.unwrap());
    let td = spiffe::TrustDomain::new(PTD).unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.bundle_set().get(&td).unwrap().authorities().len(), 1, "initial bundle");

    // The partner comes back with a bundle holding a second (new) CA and a JWT key.
    let successor = ca("partner CA 2", true);
    *s.answer.lock().unwrap() = Answer::Serve {
        cert: leaf(&s.partner_ca, ENDPOINT_ID),
        body: Arc::new(bundle_doc(&[&s.partner_ca.der, &successor.der], "kid-good").into_bytes()),
    };
    // Pushed on the open stream (the retry after the hang is at most ~11 s away).
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pushed.bundle_set().get(&td).unwrap().authorities().len(), 2);
    let jwt = client.fetch_jwt_bundles().await.unwrap();
    assert!(jwt.get(&td).unwrap().find_jwt_authority("kid-good").is_some(), "JWT key of the fetched bundle");
    let cache = s.daemon.data_dir().join("federation").join(format!("{PTD}.json"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600);
    eventually("update audited", Duration::from_secs(5), || {
        std::fs::read_to_string(s.daemon.audit_log()).unwrap_or_default().contains("federated_bundle_updated")
    });

    // The partner goes away (serves garbage); a restart still serves the last good bundle.
    *s.answer.lock().unwrap() =
        Answer::Serve { cert: leaf(&s.partner_ca, ENDPOINT_ID), body: Arc::new(b"garbage".to_vec()) };
    drop(stream);
    s.daemon.stop();
    s.daemon.spawn();
    assert_eq!(partner_authorities(&s.daemon).await.len(), 2, "last good bundle after the restart");
    eventually("the refusal after the restart", Duration::from_secs(20), || {
        s.daemon.log().contains("federated bundle refused")
    });
    assert_eq!(partner_authorities(&s.daemon).await.len(), 2, "still the last good bundle");
    // Never a private key or a whole document in the log.
    assert!(!s.daemon.log().contains("BEGIN"));
}
